using System.Globalization;
using System.Text.Json;
using Grpc.Core;

namespace HandoffDapr.FakeSidecar;

/// <summary>
/// The state stores behind <c>DaprClient</c> GetState/SaveState/DeleteState, in memory, with ETags
/// (mismatch → Aborted, as pkg/api/grpc/grpc.go getStateErrorCode maps state.ETagMismatch).
/// </summary>
internal sealed class KeyValueStateStores(FakeSidecarOptions options)
{
    private readonly object gate = new();
    private readonly Dictionary<(string Store, string Key), (byte[] Value, long ETag)> items = new();
    private long nextETag;

    public GrpcError? CheckStore(string store) =>
        options.StateStoreNames.Contains(store)
            ? null
            : options.StateStoreNames.Count == 0
                ? GrpcError.Rich(StatusCode.FailedPrecondition, $"state store {store} is not configured", "DAPR_STATE_NOT_CONFIGURED", new Dictionary<string, string> { ["appID"] = options.AppId })
                : GrpcError.Rich(StatusCode.InvalidArgument, $"state store {store} is not found", "DAPR_STATE_NOT_FOUND", new Dictionary<string, string> { ["appID"] = options.AppId });

    public (byte[] Value, string ETag)? Get(string store, string key)
    {
        lock (gate)
        {
            return items.TryGetValue((store, key), out var v) ? (v.Value, v.ETag.ToString(CultureInfo.InvariantCulture)) : null;
        }
    }

    /// <summary>Saves all items or none; returns the gRPC error daprd would.</summary>
    public GrpcError? Save(string store, IReadOnlyList<(string Key, byte[] Value, string? ETag, IReadOnlyDictionary<string, string> Metadata)> states)
    {
        lock (gate)
        {
            foreach (var s in states)
            {
                if (s.Key.Length == 0)
                {
                    return GrpcError.Rich(StatusCode.InvalidArgument, "state key cannot be empty", "ERR_STATE_SAVE");
                }

                if (s.ETag is not null && !ETagMatches(store, s.Key, s.ETag))
                {
                    return GrpcError.Rich(StatusCode.Aborted,
                        $"failed saving state in state store {store}: possible etag mismatch. error from state store: etag mismatch", "ERR_STATE_SAVE");
                }
            }

            foreach (var s in states)
            {
                var value = s.Value;
                if (s.Metadata.TryGetValue("contentType", out var ct) && ct == "application/json")
                {
                    value = GoJson.Reencode(JsonDocument.Parse(value).RootElement, preserveNumbers: false); // json.Unmarshal into any
                }

                items[(store, s.Key)] = (value, ++nextETag);
            }

            return null;
        }
    }

    public GrpcError? Delete(string store, string key, string? etag)
    {
        lock (gate)
        {
            if (etag is not null && !ETagMatches(store, key, etag))
            {
                return GrpcError.Rich(StatusCode.Aborted,
                    $"failed deleting state with key {key}: possible etag mismatch. error from state store: etag mismatch", "ERR_STATE_DELETE");
            }

            items.Remove((store, key));
            return null;
        }
    }

    private bool ETagMatches(string store, string key, string etag) =>
        items.TryGetValue((store, key), out var current) && current.ETag.ToString(CultureInfo.InvariantCulture) == etag;
}
