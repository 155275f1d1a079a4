using System.Net;
using System.Net.Http.Headers;
using Microsoft.AspNetCore.Http;

namespace HandoffDapr.FakeSidecar;

/// <summary>Serves <see cref="GrpcDispatcher"/> on the h2c Kestrel endpoint (the port behind DAPR_GRPC_ENDPOINT).</summary>
internal static class GrpcKestrelEndpoint
{
    public static async Task HandleAsync(HttpContext context, GrpcDispatcher dispatcher)
    {
        var request = context.Request;
        if (request.Method != "POST" || request.ContentType?.StartsWith("application/grpc", StringComparison.OrdinalIgnoreCase) != true)
        {
            context.Response.StatusCode = StatusCodes.Status415UnsupportedMediaType; // gRPC over HTTP/2 spec
            return;
        }

        var headers = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, values) in request.Headers)
        {
            headers[name.ToLowerInvariant()] = values.ToString();
        }

        using var buffer = new MemoryStream();
        await request.Body.CopyToAsync(buffer, context.RequestAborted).ConfigureAwait(false);
        var reply = await dispatcher.DispatchAsync(request.Path.Value ?? "", headers, buffer.ToArray(), context.RequestAborted).ConfigureAwait(false);

        var response = context.Response;
        response.StatusCode = 200;
        response.ContentType = "application/grpc";
        foreach (var (name, value) in reply.Headers)
        {
            response.Headers.Append(name, value);
        }

        if (reply.Message is { } message)
        {
            await response.Body.WriteAsync(GrpcFraming.Frame(message), context.RequestAborted).ConfigureAwait(false);
        }

        foreach (var (name, value) in StatusTrailers(reply))
        {
            response.AppendTrailer(name, value);
        }
    }

    public static IEnumerable<KeyValuePair<string, string>> StatusTrailers(GrpcReply reply)
    {
        if (reply.Error is not { } error)
        {
            yield return new("grpc-status", "0");
            yield break;
        }

        yield return new("grpc-status", ((int)error.Code).ToString(System.Globalization.CultureInfo.InvariantCulture));
        yield return new("grpc-message", GrpcFraming.EncodeStatusMessage(error.Message));
        if (error.Details is { } details)
        {
            yield return new("grpc-status-details-bin", GrpcFraming.EncodeBinaryHeader(details));
        }
    }
}

/// <summary>
/// The same gRPC dispatch without a socket, for <c>GrpcChannelOptions.HttpHandler</c>: an HTTP/2-shaped
/// reply with the status in <see cref="HttpResponseMessage.TrailingHeaders"/>.
/// </summary>
internal sealed class InMemoryGrpcHandler(GrpcDispatcher dispatcher) : HttpMessageHandler
{
    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var headers = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, values) in request.Headers)
        {
            headers[name.ToLowerInvariant()] = string.Join(",", values);
        }

        var body = Array.Empty<byte>();
        if (request.Content is not null)
        {
            foreach (var (name, values) in request.Content.Headers)
            {
                headers[name.ToLowerInvariant()] = string.Join(",", values);
            }

            body = await request.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
        }

        var reply = await dispatcher.DispatchAsync(request.RequestUri?.AbsolutePath ?? "", headers, body, cancellationToken).ConfigureAwait(false);
        var response = new HttpResponseMessage(HttpStatusCode.OK)
        {
            Version = HttpVersion.Version20,
            RequestMessage = request,
            Content = new ByteArrayContent(reply.Message is { } m ? GrpcFraming.Frame(m) : []),
        };
        response.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        foreach (var (name, value) in reply.Headers)
        {
            response.Headers.TryAddWithoutValidation(name, value);
        }

        foreach (var (name, value) in GrpcKestrelEndpoint.StatusTrailers(reply))
        {
            response.TrailingHeaders.TryAddWithoutValidation(name, value);
        }

        return response;
    }
}
