namespace HandoffDapr.Core.Providers;

/// <summary>
/// Carries one request to a provider's HTTP API and brings back status and body. Two implementations:
/// <c>HttpClient</c> in embedded mode and the Dapr output binding in Dapr mode. Authentication is the
/// transport's business, so provider clients never see an API key.
/// </summary>
public interface IProviderTransport
{
    /// <exception cref="ProviderTransportException">No HTTP answer was received.</exception>
    Task<ProviderResponse> SendAsync(ProviderRequest request, CancellationToken cancellationToken);
}

/// <param name="Path">Relative to the provider's base URL, without a leading slash; built only from validated ids.</param>
/// <param name="Headers">Provider-specific headers (API version, media type). Never credentials: those are the transport's.</param>
public sealed record ProviderRequest(HttpMethod Method, string Path, ReadOnlyMemory<byte> Body = default, IReadOnlyDictionary<string, string>? Headers = null);

/// <param name="RetryAfter">The raw <c>Retry-After</c> header, when the provider sent one.</param>
/// <param name="RateLimitRemaining">The raw <c>x-ratelimit-remaining</c> header (GitHub), when sent.</param>
/// <param name="RateLimitReset">The raw <c>x-ratelimit-reset</c> header (GitHub: epoch seconds), when sent.</param>
public sealed record ProviderResponse(int StatusCode, ReadOnlyMemory<byte> Body, string? RetryAfter = null, string? RateLimitRemaining = null, string? RateLimitReset = null)
{
    public const string RateLimitRemainingHeader = "x-ratelimit-remaining";
    public const string RateLimitResetHeader = "x-ratelimit-reset";

    public bool IsSuccess => StatusCode is >= 200 and <= 299;
}

public enum TransportFailureKind
{
    /// <summary>No answer in time. The request may have been acted on.</summary>
    Timeout,

    /// <summary>The connection failed or broke.</summary>
    Network,

    /// <summary>The circuit breaker refused to send: nothing reached the provider.</summary>
    CircuitOpen,
}

/// <summary>No HTTP answer. <see cref="RequestSent"/> tells whether the provider may have acted on the request.</summary>
public sealed class ProviderTransportException(TransportFailureKind kind, bool requestSent, Exception? inner = null)
    : Exception($"Provider transport failed: {kind}", inner)
{
    public TransportFailureKind Kind { get; } = kind;
    public bool RequestSent { get; } = requestSent;
}
