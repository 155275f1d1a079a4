using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Google.Rpc;
using Grpc.Core;

namespace HandoffDapr.FakeSidecar;

/// <summary>
/// A gRPC error as daprd returns it: status code, message and, for its "rich" errors, a
/// <c>grpc-status-details-bin</c> trailer carrying google.rpc.Status with an ErrorInfo (domain <c>dapr.io</c>)
/// (dapr/kit errors/errors.go, dapr pkg/api/errors).
/// </summary>
internal sealed record GrpcError(StatusCode Code, string Message, byte[]? Details)
{
    public static GrpcError Plain(StatusCode code, string message) => new(code, message, null);

    public static GrpcError Rich(StatusCode code, string message, string reason, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var info = new ErrorInfo { Domain = "dapr.io", Reason = reason };
        if (metadata is not null)
        {
            foreach (var (k, v) in metadata)
            {
                info.Metadata[k] = v;
            }
        }

        var status = new Google.Rpc.Status { Code = (int)code, Message = message };
        status.Details.Add(Any.Pack(info));
        return new GrpcError(code, message, status.ToByteArray());
    }

    /// <summary>
    /// invokev1.ErrorFromHTTPResponseCode (pkg/messaging/v1/util.go): gRPC code from the HTTP status,
    /// message = the HTTP status text, detail (≤ 63 chars) in ErrorInfo metadata. Used for API token failures.
    /// </summary>
    public static GrpcError FromHttpStatus(int httpStatus, string statusText, StatusCode code, string detail)
    {
        if (detail.Length >= 63)
        {
            detail = detail[..63];
        }

        return Rich(code, statusText, statusText, new Dictionary<string, string>
        {
            ["http.code"] = httpStatus.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["http.error_message"] = detail,
        });
    }
}
