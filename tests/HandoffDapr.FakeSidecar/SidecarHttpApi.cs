using Microsoft.AspNetCore.Http;

namespace HandoffDapr.FakeSidecar;

/// <summary>
/// The sidecar's HTTP API (the port behind DAPR_HTTP_ENDPOINT). Routing is by path segments, so the
/// SDK's <c>//v1.0/...</c> (its default endpoint ends in '/') lands on the same routes, as daprd's cleaned paths do.
/// </summary>
internal sealed class SidecarHttpApi(
    FakeSidecarOptions options,
    ActorApi actors,
    PubSubBroker broker,
    SidecarMetadata metadata,
    AppChannelClient app)
{
    public async Task HandleAsync(HttpContext context)
    {
        var request = context.Request;
        var ct = context.RequestAborted;
        var segments = (request.Path.Value ?? "").Split('/', StringSplitOptions.RemoveEmptyEntries).Select(Uri.UnescapeDataString).ToArray();
        var verb = request.Method;
        HttpReply reply;

        var isHealth = verb == "GET" && segments is ["v1.0", "healthz"] or ["v1.0", "healthz", "outbound"];
        if (!string.IsNullOrEmpty(options.ApiToken) && !isHealth && request.Headers["dapr-api-token"] != options.ApiToken)
        {
            reply = DaprErrors.InvalidApiToken();
        }
        else
        {
            var body = await ReadBodyAsync(request, ct).ConfigureAwait(false);
            reply = segments switch
            {
                ["v1.0", "healthz"] => verb != "GET" ? DaprErrors.MethodNotAllowed()
                    : options.Ready ? HttpReply.Empty() : DaprErrors.HealthNotReady(),
                ["v1.0", "healthz", "outbound"] => verb == "GET" ? HttpReply.Empty() : DaprErrors.MethodNotAllowed(),
                ["v1.0", "metadata"] => verb == "GET"
                    ? HttpReply.JsonBody(await metadata.BuildJsonAsync(ct).ConfigureAwait(false))
                    : DaprErrors.MethodNotAllowed(),
                ["v1.0", "actors", var type, var id, "state"] => verb is "PUT" or "POST"
                    ? await actors.TransactionAsync(type, id, body).ConfigureAwait(false)
                    : DaprErrors.MethodNotAllowed(),
                ["v1.0", "actors", var type, var id, "state", var key] => verb == "GET"
                    ? await actors.GetStateAsync(type, id, key).ConfigureAwait(false)
                    : DaprErrors.MethodNotAllowed(),
                ["v1.0", "actors", var type, var id, "method", var method] => verb is "GET" or "POST" or "PUT" or "DELETE"
                    ? await actors.InvokeAsync(type, id, method, request, body, ct).ConfigureAwait(false)
                    : DaprErrors.MethodNotAllowed(),
                ["v1.0", "actors", var type, var id, "reminders", var name] => verb switch
                {
                    "PUT" or "POST" => await actors.CreateReminderAsync(type, id, name, body, ct).ConfigureAwait(false),
                    "GET" => await actors.GetReminderAsync(type, id, name, ct).ConfigureAwait(false),
                    "DELETE" => await actors.DeleteReminderAsync(type, id, name, ct).ConfigureAwait(false),
                    _ => DaprErrors.MethodNotAllowed(),
                },
                ["v1.0", "actors", var type, var id, "timers", var name] => verb switch
                {
                    "PUT" or "POST" => actors.CreateTimer(type, id, name, body),
                    "DELETE" => actors.DeleteTimer(type, id, name),
                    _ => DaprErrors.MethodNotAllowed(),
                },
                ["v1.0", "publish", var pubsub, .. var topicParts] when topicParts.Length > 0 => verb == "POST"
                    ? Publish(pubsub, string.Join('/', topicParts), request, body)
                    : DaprErrors.MethodNotAllowed(),
                ["v1.0", "invoke", var appId, "method", ..] => await InvokeAppAsync(appId, request, body, ct).ConfigureAwait(false),
                _ => DaprErrors.RouteNotFound(),
            };
        }

        context.Response.StatusCode = reply.Status;
        foreach (var group in reply.Headers.GroupBy(h => h.Key, StringComparer.OrdinalIgnoreCase))
        {
            context.Response.Headers[group.Key] = group.Select(h => h.Value).ToArray();
        }

        if (reply.ContentType is not null)
        {
            context.Response.ContentType = reply.ContentType;
        }

        if (reply.Body is { Length: > 0 } bytes)
        {
            await context.Response.Body.WriteAsync(bytes, ct).ConfigureAwait(false);
        }
    }

    /// <summary><c>POST v1.0/publish/{pubsub}/{topic}</c>; query <c>metadata.k=v</c> becomes request metadata.</summary>
    private HttpReply Publish(string pubsub, string topic, HttpRequest request, byte[] body)
    {
        var md = request.Query.Where(q => q.Key.StartsWith("metadata.", StringComparison.Ordinal))
            .ToDictionary(q => q.Key["metadata.".Length..], q => q.Value.ToString());
        var error = broker.Publish(pubsub, topic, body, request.ContentType, md);
        if (error is null)
        {
            return HttpReply.Empty();
        }

        var code = error.Message.StartsWith("topic is empty", StringComparison.Ordinal) ? "ERR_TOPIC_NAME_EMPTY"
            : error.Message.EndsWith("is not found", StringComparison.Ordinal) ? "ERR_PUBSUB_NOT_FOUND" : "ERR_PUBSUB_EMPTY";
        return DaprErrors.Json(404, code, error.Message);
    }

    /// <summary>Service invocation of this app (<c>v1.0/invoke/{appId}/method/{path}</c>): the app's reply is returned as is.</summary>
    private async Task<HttpReply> InvokeAppAsync(string appId, HttpRequest request, byte[] body, CancellationToken ct)
    {
        if (appId != options.AppId)
        {
            return DaprErrors.Json(500, "ERR_DIRECT_INVOKE", $"failed to invoke, id: {appId}, err: the fake sidecar only knows app '{options.AppId}'");
        }

        // The raw path keeps escaped characters of the method path intact.
        var raw = request.Path.Value ?? "";
        var marker = "/method/";
        var method = raw[(raw.IndexOf(marker, StringComparison.Ordinal) + marker.Length)..];
        using var message = new HttpRequestMessage(new HttpMethod(request.Method), method + request.QueryString.Value);
        if (body.Length > 0 || request.ContentType is not null)
        {
            message.Content = new ByteArrayContent(body);
        }

        HeaderForwarding.CopyRequestHeaders(request, message);
        try
        {
            using var response = await app.SendAsync(message, ct).ConfigureAwait(false);
            var reply = new HttpReply((int)response.StatusCode, await response.Content.ReadAsByteArrayAsync(ct).ConfigureAwait(false),
                response.Content.Headers.ContentType?.ToString());
            HeaderForwarding.CopyResponseHeaders(response, reply.Headers);
            return reply;
        }
        catch (HttpRequestException ex)
        {
            return DaprErrors.Json(500, "ERR_DIRECT_INVOKE", $"failed to invoke, id: {appId}, err: {ex.Message}");
        }
    }

    private static async Task<byte[]> ReadBodyAsync(HttpRequest request, CancellationToken ct)
    {
        using var buffer = new MemoryStream();
        await request.Body.CopyToAsync(buffer, ct).ConfigureAwait(false);
        return buffer.ToArray();
    }
}
