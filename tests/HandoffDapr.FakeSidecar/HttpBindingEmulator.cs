using System.Globalization;
using System.Text;
using Dapr.Client.Autogen.Grpc.v1;
using Google.Protobuf;
using Grpc.Core;

namespace HandoffDapr.FakeSidecar;

/// <summary>
/// Output bindings of type <c>bindings.http</c>, behaving as components-contrib bindings/http/http.go does,
/// with daprd's wrapping of the result (dapr pkg/api/grpc/grpc.go InvokeBinding, pkg/runtime/processor/binding/send.go).
/// </summary>
internal sealed class HttpBindingEmulator : IDisposable
{
    // HTTPSource.Operations(), in its order (it shows in the "does not support operation" message).
    private static readonly string[] Operations = ["create", "get", "head", "post", "put", "patch", "delete", "options", "trace"];
    private const long DefaultMaxResponseBodySize = 100L << 20;

    private readonly object gate = new();
    private readonly Dictionary<string, Component> components = new(StringComparer.Ordinal);
    private readonly List<BindingInvocation> invocations = new();
    private readonly SocketsHttpHandler sharedHandler = new() { UseCookies = false };

    private sealed record Component(
        string Name, string Url, IReadOnlyDictionary<string, string> Metadata, HttpClient Client,
        TimeSpan? ResponseTimeout, long MaxResponseBodySize, bool ErrorIfNot2XX, string? SecurityToken, string? SecurityTokenHeader);

    public IReadOnlyList<BindingInvocation> Invocations
    {
        get
        {
            lock (gate)
            {
                return invocations.ToList();
            }
        }
    }

    public IEnumerable<string> Names
    {
        get
        {
            lock (gate)
            {
                return components.Keys.ToList();
            }
        }
    }

    /// <summary>Init(): reads component metadata as kit DecodeMetadata would (names case-insensitive).</summary>
    public void Add(string name, Uri url, IReadOnlyDictionary<string, string>? metadata, HttpMessageHandler? handler)
    {
        metadata ??= new Dictionary<string, string>();
        string? Meta(string key) => metadata.FirstOrDefault(kv => string.Equals(kv.Key, key, StringComparison.OrdinalIgnoreCase)).Value;

        TimeSpan? timeout = null;
        if (Meta("responseTimeout") is { Length: > 0 } rt)
        {
            // toTimeDurationHookFunc: Go duration, else whole seconds.
            timeout = DaprDurationParser.TryParseGoDuration(rt, out var d) ? d
                : long.TryParse(rt, NumberStyles.None, CultureInfo.InvariantCulture, out var secs) ? TimeSpan.FromSeconds(secs)
                : throw new ArgumentException($"invalid responseTimeout '{rt}'", nameof(metadata));
        }

        var maxBody = Meta("maxResponseBodySize") is { Length: > 0 } mb ? ParseByteSize(mb) : DefaultMaxResponseBodySize;
        // meta.Properties["errorIfNot2XX"]: exact key; empty → default true.
        var errorIfNot2XX = !metadata.TryGetValue("errorIfNot2XX", out var e2) || e2.Length == 0 || PubSubBroker.IsTruthy(e2);
        var client = new HttpClient(handler ?? sharedHandler, disposeHandler: false) { Timeout = Timeout.InfiniteTimeSpan };
        lock (gate)
        {
            components[name] = new Component(name, url.OriginalString, metadata, client, timeout, maxBody, errorIfNot2XX,
                Meta("securityToken"), Meta("securityTokenHeader"));
        }
    }

    /// <summary>Runs one InvokeBinding; returns the response (or error) plus the response metadata daprd also sends as <c>metadata.*</c> headers.</summary>
    public async Task<(InvokeBindingResponse? Response, IReadOnlyDictionary<string, string>? ResponseMetadata, GrpcError? Error)> InvokeAsync(
        InvokeBindingRequest request, IReadOnlyDictionary<string, string> incomingMetadata, CancellationToken ct)
    {
        var name = request.Name;
        var data = request.Data.ToByteArray();
        var appMetadata = request.Metadata.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);

        GrpcError Fail(string detail) => GrpcError.Rich(StatusCode.Internal, $"error invoking output binding {name}: {detail}", "ERR_INVOKE_OUTPUT_BINDING");
        void RecordCall(Uri? uri, int? status, string? error)
        {
            lock (gate)
            {
                invocations.Add(new BindingInvocation(name, request.Operation, appMetadata, data, uri, status, error));
            }
        }

        Component? component;
        lock (gate)
        {
            components.TryGetValue(name, out component);
        }

        string? preflight = request.Operation.Length == 0 ? "operation field is missing from request"
            : component is null ? $"couldn't find output binding {name}"
            : !Operations.Contains(request.Operation) ? $"binding {name} does not support operation {request.Operation}. supported operations:{string.Join(' ', Operations)}"
            : null;
        if (preflight is not null)
        {
            var error = Fail(preflight);
            RecordCall(null, null, error.Message);
            return (null, null, error);
        }

        // daprd copies the incoming gRPC metadata in without overwriting, except the trace headers.
        var md = new Dictionary<string, string>(appMetadata, StringComparer.Ordinal);
        foreach (var (key, value) in incomingMetadata)
        {
            if (!md.ContainsKey(key) || key is "traceparent" or "tracestate")
            {
                md[key] = value;
            }
        }

        var c = component!;
        var url = c.Url;
        if (md.TryGetValue("path", out var path) && path.Length > 0)
        {
            url = url.TrimEnd('/') + "/" + path.TrimStart('/');
        }

        var errorIfNot2XX = md.TryGetValue("errorIfNot2XX", out var e2) && e2.Length > 0 ? PubSubBroker.IsTruthy(e2) : c.ErrorIfNot2XX;
        var method = request.Operation.ToUpperInvariant();
        if (method == "CREATE")
        {
            method = "POST";
        }

        using var message = new HttpRequestMessage(new HttpMethod(method), url);
        var hasBody = method is "PUT" or "POST" or "PATCH";
        if (hasBody)
        {
            message.Content = new ByteArrayContent(data);
            if (!md.ContainsKey("Content-Type"))
            {
                SetHeader(message, "Content-Type", "application/json; charset=utf-8");
            }
        }

        if (!md.ContainsKey("Accept"))
        {
            SetHeader(message, "Accept", "application/json; charset=utf-8");
        }

        if (!string.IsNullOrEmpty(c.SecurityToken) && !string.IsNullOrEmpty(c.SecurityTokenHeader))
        {
            SetHeader(message, c.SecurityTokenHeader, c.SecurityToken);
        }

        foreach (var (key, value) in md)
        {
            if (key.Length > 0 && key[0] is >= 'A' and <= 'Z')
            {
                SetHeader(message, key, value); // "metadata keys that start with a capital letter are treated as request headers"
            }
        }

        foreach (var traceKey in new[] { "traceparent", "tracestate", "baggage" })
        {
            if (md.TryGetValue(traceKey, out var tv) && tv.Length > 0)
            {
                SetHeader(message, traceKey, tv);
            }
        }

        if (!message.Headers.Contains("User-Agent"))
        {
            message.Headers.TryAddWithoutValidation("User-Agent", "Go-http-client/1.1"); // Go's default client
        }

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        if (c.ResponseTimeout is { } rt)
        {
            timeout.CancelAfter(rt);
        }

        HttpResponseMessage response;
        byte[] body;
        try
        {
            response = await c.Client.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, timeout.Token).ConfigureAwait(false);
            body = await ReadLimitedAsync(response, c.MaxResponseBodySize, timeout.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is HttpRequestException or OperationCanceledException && !ct.IsCancellationRequested)
        {
            // Go's *url.Error: `Post "http://...": context deadline exceeded`.
            var op = method[0] + method[1..].ToLowerInvariant();
            var reason = ex is OperationCanceledException ? "context deadline exceeded" : GoDialError(ex, message.RequestUri!) ?? ex.Message;
            var error = Fail($"{op} \"{url}\": {reason}");
            RecordCall(message.RequestUri, null, error.Message);
            return (null, null, error);
        }

        using (response)
        {
            var status = (int)response.StatusCode;
            var responseMetadata = new Dictionary<string, string>(StringComparer.Ordinal)
            {
                ["statusCode"] = status.ToString(CultureInfo.InvariantCulture),
                ["status"] = string.IsNullOrEmpty(response.ReasonPhrase) ? status.ToString(CultureInfo.InvariantCulture) : $"{status} {response.ReasonPhrase}",
            };
            foreach (var group in response.Headers.Concat(response.Content.Headers)
                         .Where(h => !h.Key.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase))
                         .GroupBy(h => CanonicalHeaderKey(h.Key), StringComparer.Ordinal))
            {
                responseMetadata[group.Key] = string.Join(", ", group.SelectMany(h => h.Value));
            }

            string? errorText = errorIfNot2XX && status / 100 != 2 ? $"received status code {status}" : null;
            if (errorText is not null)
            {
                var error = Fail(errorText);
                RecordCall(message.RequestUri, status, error.Message);
                return (null, responseMetadata, error);
            }

            RecordCall(message.RequestUri, status, null);
            var reply = new InvokeBindingResponse { Data = ByteString.CopyFrom(body) };
            reply.Metadata.Add(responseMetadata);
            return (reply, responseMetadata, null);
        }
    }

    /// <summary>
    /// A failure to connect as Go's net package words it (the <c>*net.OpError</c> inside the <c>*url.Error</c>): "dial tcp
    /// 127.0.0.1:9: connect: connection refused", "dial tcp: lookup host: no such host"; null for any other failure.
    /// .NET's own text ("Connection refused (127.0.0.1:9)") would not be what the app reads from daprd.
    /// </summary>
    internal static string? GoDialError(Exception exception, Uri url)
    {
        var socket = exception as System.Net.Sockets.SocketException;
        for (var inner = exception.InnerException; socket is null && inner is not null; inner = inner.InnerException)
        {
            socket = inner as System.Net.Sockets.SocketException;
        }

        // Go dials the resolved address; a name other than localhost is kept as it is (what it resolves to is unknown here).
        var address = $"{(url.IsLoopback && url.HostNameType == UriHostNameType.Dns ? "127.0.0.1" : url.Host)}:{url.Port}";
        return socket?.SocketErrorCode switch
        {
            System.Net.Sockets.SocketError.ConnectionRefused => $"dial tcp {address}: connect: connection refused",
            System.Net.Sockets.SocketError.HostUnreachable => $"dial tcp {address}: connect: no route to host",
            System.Net.Sockets.SocketError.NetworkUnreachable => $"dial tcp {address}: connect: network is unreachable",
            System.Net.Sockets.SocketError.TimedOut => $"dial tcp {address}: i/o timeout",
            System.Net.Sockets.SocketError.HostNotFound or System.Net.Sockets.SocketError.NoData => $"dial tcp: lookup {url.Host}: no such host",
            _ => null,
        };
    }

    private static readonly HashSet<string> ContentHeaders = new(StringComparer.OrdinalIgnoreCase)
    {
        "Allow", "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length", "Content-Location",
        "Content-MD5", "Content-Range", "Content-Type", "Expires", "Last-Modified",
    };

    // Go's Header.Set: canonical name, replaces earlier values. Content headers live on HttpContent in .NET
    // (a GET given a Content-Type gets an empty body to carry it).
    private static void SetHeader(HttpRequestMessage message, string name, string value)
    {
        name = CanonicalHeaderKey(name);
        if (ContentHeaders.Contains(name))
        {
            message.Content ??= new ByteArrayContent([]);
            message.Content.Headers.Remove(name);
            message.Content.Headers.TryAddWithoutValidation(name, value);
            return;
        }

        message.Headers.Remove(name);
        message.Headers.TryAddWithoutValidation(name, value);
    }

    /// <summary>Go textproto.CanonicalMIMEHeaderKey: "content-type" → "Content-Type"; names with invalid bytes unchanged.</summary>
    internal static string CanonicalHeaderKey(string s)
    {
        if (s.Any(ch => ch is ' ' or ':' or > '~' or < '!'))
        {
            return s;
        }

        var chars = s.ToCharArray();
        var upper = true;
        for (var i = 0; i < chars.Length; i++)
        {
            chars[i] = upper ? char.ToUpperInvariant(chars[i]) : char.ToLowerInvariant(chars[i]);
            upper = chars[i] == '-';
        }

        return new string(chars);
    }

    private static async Task<byte[]> ReadLimitedAsync(HttpResponseMessage response, long limit, CancellationToken ct)
    {
        await using var stream = await response.Content.ReadAsStreamAsync(ct).ConfigureAwait(false);
        using var buffer = new MemoryStream();
        var chunk = new byte[16 * 1024];
        int read;
        while ((read = await stream.ReadAsync(chunk, ct).ConfigureAwait(false)) > 0)
        {
            var take = limit > 0 ? (int)Math.Min(read, limit - buffer.Length) : read;
            buffer.Write(chunk, 0, take);
            if (limit > 0 && buffer.Length >= limit)
            {
                break; // io.LimitReader: silently truncated
            }
        }

        return buffer.ToArray();
    }

    /// <summary>Kubernetes resource quantities as kit ByteSize reads them: 100Mi, 1Ki, 1M, 2048.</summary>
    internal static long ParseByteSize(string s)
    {
        var suffixes = new (string Suffix, long Factor)[]
        {
            ("Ki", 1L << 10), ("Mi", 1L << 20), ("Gi", 1L << 30), ("Ti", 1L << 40), ("Pi", 1L << 50), ("Ei", 1L << 60),
            ("k", 1_000L), ("M", 1_000_000L), ("G", 1_000_000_000L), ("T", 1_000_000_000_000L), ("P", 1_000_000_000_000_000L),
        };
        foreach (var (suffix, factor) in suffixes)
        {
            if (s.EndsWith(suffix, StringComparison.Ordinal))
            {
                return (long)(decimal.Parse(s[..^suffix.Length], CultureInfo.InvariantCulture) * factor);
            }
        }

        return long.Parse(s, CultureInfo.InvariantCulture);
    }

    public void Dispose()
    {
        lock (gate)
        {
            foreach (var c in components.Values)
            {
                c.Client.Dispose();
            }
        }

        sharedHandler.Dispose();
    }
}
