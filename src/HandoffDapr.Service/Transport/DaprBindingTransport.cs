using System.Globalization;
using System.Net.Sockets;
using Dapr;
using Dapr.Client;
using Grpc.Core;
using HandoffDapr.Core.Providers;
using Microsoft.Extensions.Logging.Abstractions;

namespace HandoffDapr.Service.Transport;

/// <summary>
/// Dapr mode's transport: the provider's HTTP API through a <c>bindings.http</c> output binding. The binding
/// adds the API key (<c>securityToken</c>), so the key never enters this process.
/// </summary>
public sealed partial class DaprBindingTransport(DaprClient dapr, string bindingName, ILogger<DaprBindingTransport>? logger = null) : IProviderTransport
{
    private readonly ILogger logger = logger ?? NullLogger<DaprBindingTransport>.Instance;

    public async Task<ProviderResponse> SendAsync(ProviderRequest request, CancellationToken cancellationToken)
    {
        var binding = new BindingRequest(bindingName, request.Method.Method.ToLowerInvariant())
        {
            Data = request.Body,
            Metadata =
            {
                ["path"] = "/" + request.Path,
                // Without this the binding turns every non-2xx into a bare gRPC error and loses status and body.
                ["errorIfNot2XX"] = "false",
            },
        };

        // bindings.http turns request metadata whose key starts with a capital letter into a request header.
        foreach (var (name, value) in request.Headers ?? new Dictionary<string, string>())
        {
            binding.Metadata[name] = value;
        }

        BindingResponse response;
        try
        {
            response = await dapr.InvokeBindingAsync(binding, cancellationToken);
        }
        catch (DaprException exception) when (!cancellationToken.IsCancellationRequested)
        {
            var error = exception.InnerException as RpcException;
            if (BindingRefused(error?.Status.Detail))
            {
                // A configuration fault, not the provider's: say which binding, or the operator sees only "provider_unavailable".
                LogBindingRefused(bindingName, error!.Status.Detail);
            }

            var (kind, requestSent) = Classify(error, request.Method.Method, "/" + request.Path);
            throw new ProviderTransportException(kind, requestSent, exception);
        }

        var metadata = response.Metadata;
        if (metadata is null || !metadata.TryGetValue("statusCode", out var code)
            || !int.TryParse(code, NumberStyles.None, CultureInfo.InvariantCulture, out var statusCode))
        {
            // The binding answered without a status: a garbled answer, and the provider may have acted on it.
            throw new ProviderTransportException(TransportFailureKind.Network, requestSent: true);
        }

        // bindings.http returns the response headers as metadata, keyed in Go's canonical form (X-Ratelimit-Reset).
        string? Header(string name) => metadata.FirstOrDefault(pair => string.Equals(pair.Key, name, StringComparison.OrdinalIgnoreCase)).Value;
        return new ProviderResponse(
            statusCode, response.Data, Header("Retry-After"), Header(ProviderResponse.RateLimitRemainingHeader), Header(ProviderResponse.RateLimitResetHeader));
    }

    /// <summary>
    /// daprd answers every failed output binding with <c>Internal</c> and <c>ERR_INVOKE_OUTPUT_BINDING</c>; only the
    /// message tells an open circuit breaker (gobreaker's "circuit breaker is open", or "too many requests" while
    /// half-open: the binding never ran) or a refused dial (no connection to the provider) from a timeout (the resiliency
    /// policy's or the binding's own) or a broken call.
    /// </summary>
    internal static (TransportFailureKind Kind, bool RequestSent) Classify(RpcException? error, string method, string path)
    {
        var detail = error?.Status.Detail ?? string.Empty;
        return error?.StatusCode switch
        {
            // daprd refused before calling the binding (no such binding, an operation it does not support): nothing was
            // sent, so there is nothing to reconcile; a retry succeeds once the binding is deployed under that name.
            _ when BindingRefused(detail) => (TransportFailureKind.Network, false),
            // No connection to the sidecar was made: the binding never ran. Grpc.Net.Client also reports a connection
            // that broke mid-call as Unavailable (any IOException), and by then daprd may have called the provider.
            StatusCode.Unavailable when NeverConnected(error.Status.DebugException) => (TransportFailureKind.Network, false),
            StatusCode.DeadlineExceeded => (TransportFailureKind.Timeout, true),
            _ when detail.Contains("circuit breaker is open", StringComparison.Ordinal)
                || detail.EndsWith("too many requests", StringComparison.Ordinal) => (TransportFailureKind.CircuitOpen, false),
            // Go's dial errors (net.OpError "dial tcp …: connect: connection refused", "no route to host", "network is
            // unreachable", "i/o timeout"; a DNS "no such host", "server misbehaving" or time-out) for this request: the
            // binding never had a connection to the provider. The binding follows redirects, so the same error for
            // another request (a redirect's target) comes after ours was sent.
            _ when (detail.Contains(" dial tcp", StringComparison.Ordinal) || detail.Contains("connection refused", StringComparison.OrdinalIgnoreCase)
                    || detail.Contains("no such host", StringComparison.Ordinal))
                && NamesRequest(detail, method, path) => (TransportFailureKind.Network, false),
            _ when detail.Contains("context deadline exceeded", StringComparison.Ordinal)
                || detail.Contains("Client.Timeout exceeded", StringComparison.Ordinal) => (TransportFailureKind.Timeout, true),
            _ => (TransportFailureKind.Network, true),
        };
    }

    /// <summary>
    /// Whether Go's <c>url.Error</c> in <paramref name="detail"/> (<c>Post "https://host/base/path": …</c>) is for this
    /// request: its method as Go writes it, and a URL whose path ends with ours.
    /// </summary>
    private static bool NamesRequest(string detail, string method, string path)
    {
        var prefix = string.Concat(method[..1].ToUpperInvariant(), method[1..].ToLowerInvariant(), " \"");
        var start = detail.IndexOf(prefix, StringComparison.Ordinal);
        if (start < 0)
        {
            return false;
        }

        start += prefix.Length;
        var end = detail.IndexOf('"', start);
        return end > start && Uri.TryCreate(detail[start..end], UriKind.Absolute, out var url)
            && url.AbsolutePath.EndsWith(path.Split('?')[0], StringComparison.Ordinal);
    }

    /// <summary>
    /// daprd's refusals before the binding runs (dapr pkg/runtime/processor/binding/send.go SendToOutputBinding): the
    /// binding is not loaded under that name, or it does not support the operation.
    /// </summary>
    private static bool BindingRefused(string? detail) =>
        detail is not null
        && (detail.Contains(": couldn't find output binding ", StringComparison.Ordinal)
            || (detail.Contains(" does not support operation ", StringComparison.Ordinal) && detail.Contains("supported operations:", StringComparison.Ordinal)));

    /// <summary>A failure to open the connection: a socket error from connecting, or the handler's connection error.</summary>
    private static bool NeverConnected(Exception? exception) =>
        exception is SocketException or HttpRequestException { HttpRequestError: HttpRequestError.ConnectionError };

    [LoggerMessage(EventId = 4301, EventName = "BindingRefused", Level = LogLevel.Error,
        Message = "The Dapr sidecar refused output binding {Binding} before calling the provider: {DaprMessage}. Check Handoff:Integrations:*:Binding against the names of the binding components daprd loaded (GET /v1.0/metadata)")]
    private partial void LogBindingRefused(string binding, string daprMessage);
}
