using Microsoft.AspNetCore.Http;

namespace HandoffDapr.FakeSidecar;

/// <summary>
/// Which headers daprd passes between the caller and the app on actor calls and service invocation:
/// everything but hop-by-hop headers, Content-Length and the API token (dapr pkg/messaging/v1/util.go
/// InternalMetadataToHTTPHeader, pkg/api/http/middlewares.go); Content-Type is set from the message.
/// </summary>
internal static class HeaderForwarding
{
    private static readonly HashSet<string> NotForwarded = new(StringComparer.OrdinalIgnoreCase)
    {
        // hop-by-hop (RFC 7230 6.1) and connection-level
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Proxy-Connection", "Host",
        // re-computed or handled separately
        "Content-Length", "Content-Type", "dapr-api-token", "traceparent", "tracestate",
        // Kestrel writes its own
        "Date", "Server",
    };

    public static void CopyRequestHeaders(HttpRequest from, HttpRequestMessage to)
    {
        foreach (var (name, values) in from.Headers)
        {
            if (NotForwarded.Contains(name) || name.StartsWith(':'))
            {
                continue;
            }

            to.Headers.TryAddWithoutValidation(name, (IEnumerable<string>)values!);
        }

        if (!string.IsNullOrEmpty(from.ContentType) && to.Content is not null)
        {
            to.Content.Headers.TryAddWithoutValidation("Content-Type", from.ContentType);
        }
    }

    public static void CopyResponseHeaders(HttpResponseMessage from, List<KeyValuePair<string, string>> to)
    {
        foreach (var (name, values) in from.Headers.Concat<KeyValuePair<string, IEnumerable<string>>>(from.Content.Headers))
        {
            if (NotForwarded.Contains(name))
            {
                continue;
            }

            foreach (var v in values)
            {
                to.Add(new(name, v));
            }
        }
    }

    public static void CopyResponseHeaders(HttpResponseMessage from, IHeaderDictionary to)
    {
        var list = new List<KeyValuePair<string, string>>();
        CopyResponseHeaders(from, list);
        foreach (var group in list.GroupBy(kv => kv.Key, StringComparer.OrdinalIgnoreCase))
        {
            to[group.Key] = group.Select(kv => kv.Value).ToArray();
        }
    }
}
