using HandoffDapr.Core.Providers;
using Polly.CircuitBreaker;
using Polly.Timeout;

namespace HandoffDapr.Service.Transport;

/// <summary>
/// Embedded mode's transport: the <see cref="HttpClient"/> <see cref="ProviderHttpClients"/> built for one integration
/// (no named client of a factory), with its base address, <c>Authorization</c> header, timeout and circuit breaker.
/// </summary>
public sealed class HttpProviderTransport(HttpClient client) : IProviderTransport
{
    private static readonly Dictionary<string, string> EmptyHeaders = [];

    public async Task<ProviderResponse> SendAsync(ProviderRequest request, CancellationToken cancellationToken)
    {
        using var message = new HttpRequestMessage(request.Method, request.Path);
        foreach (var (name, value) in request.Headers ?? EmptyHeaders)
        {
            message.Headers.Remove(name);
            message.Headers.TryAddWithoutValidation(name, value);
        }

        if (!request.Body.IsEmpty)
        {
            message.Content = new ReadOnlyMemoryContent(request.Body);
            message.Content.Headers.ContentType = new("application/json") { CharSet = "utf-8" };
        }

        try
        {
            using var response = await client.SendAsync(message, HttpCompletionOption.ResponseContentRead, cancellationToken);
            var body = await response.Content.ReadAsByteArrayAsync(cancellationToken);
            return new ProviderResponse(
                (int)response.StatusCode,
                body,
                Header(response, "Retry-After"),
                Header(response, ProviderResponse.RateLimitRemainingHeader),
                Header(response, ProviderResponse.RateLimitResetHeader));
        }
        catch (BrokenCircuitException exception)
        {
            throw new ProviderTransportException(TransportFailureKind.CircuitOpen, requestSent: false, exception);
        }
        catch (TimeoutRejectedException exception)
        {
            throw new ProviderTransportException(TransportFailureKind.Timeout, requestSent: true, exception);
        }
        catch (TaskCanceledException exception) when (!cancellationToken.IsCancellationRequested)
        {
            // HttpClient.Timeout elapsed.
            throw new ProviderTransportException(TransportFailureKind.Timeout, requestSent: true, exception);
        }
        catch (HttpRequestException exception)
        {
            // A host name that does not resolve, or a connection that could not be made (refused, no route, an unreachable
            // network, a connect that timed out: SocketsHttpHandler reports every failed connect as a ConnectionError), never
            // reached the provider, as Dapr mode reads any Go dial error; anything later may have.
            var neverSent = exception.HttpRequestError is HttpRequestError.NameResolutionError or HttpRequestError.ConnectionError;
            throw new ProviderTransportException(TransportFailureKind.Network, requestSent: !neverSent, exception);
        }
    }

    private static string? Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) ? values.FirstOrDefault() : null;
}
