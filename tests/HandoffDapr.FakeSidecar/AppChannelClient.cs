namespace HandoffDapr.FakeSidecar;

/// <summary>
/// How the sidecar calls the app (daprd's HTTP app channel, pkg/channel/http/http_channel.go):
/// adds <c>dapr-api-token</c> when APP_API_TOKEN is set and reads the whole reply.
/// </summary>
internal sealed class AppChannelClient(FakeSidecarOptions options) : IDisposable
{
    private readonly object gate = new();
    private HttpMessageHandler? handler;
    private HttpClient? client;
    private readonly List<Exception> appExceptions = new();
    private int generation;

    /// <summary>Bumped whenever the channel changes, so caches of the app's config are dropped.</summary>
    public int Generation => Volatile.Read(ref generation);

    public HttpMessageHandler? Handler
    {
        get => handler;
        set
        {
            lock (gate)
            {
                handler = value;
                client = null;
                Interlocked.Increment(ref generation);
            }
        }
    }

    public async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
    {
        HttpClient http;
        lock (gate)
        {
            http = client ??= new HttpClient(handler ?? new SocketsHttpHandler(), disposeHandler: handler is null)
            {
                BaseAddress = options.AppBaseAddress,
                Timeout = Timeout.InfiniteTimeSpan, // daprd sets no timeout on app calls
            };
        }

        if (!string.IsNullOrEmpty(options.AppApiToken))
        {
            request.Headers.Remove("dapr-api-token");
            request.Headers.TryAddWithoutValidation("dapr-api-token", options.AppApiToken);
        }

        try
        {
            var response = await http.SendAsync(request, HttpCompletionOption.ResponseContentRead, ct).ConfigureAwait(false);
            await response.Content.LoadIntoBufferAsync(ct).ConfigureAwait(false);
            return response;
        }
        catch (Exception ex) when (ex is not (HttpRequestException or OperationCanceledException))
        {
            // TestServer hands the app's unhandled exception to the caller; Kestrel would answer 500 with an empty
            // body, and that is what daprd sees. Keep the exception for the test to look at.
            lock (gate)
            {
                appExceptions.Add(ex);
            }

            return new HttpResponseMessage(System.Net.HttpStatusCode.InternalServerError)
            {
                RequestMessage = request,
                Content = new ByteArrayContent([]),
            };
        }
    }

    /// <summary>Unhandled app exceptions that an in-memory app channel surfaced (answered as 500 to the sidecar).</summary>
    public IReadOnlyList<Exception> AppExceptions
    {
        get
        {
            lock (gate)
            {
                return appExceptions.ToList();
            }
        }
    }

    public Task<HttpResponseMessage> GetAsync(string path, CancellationToken ct) =>
        SendAsync(new HttpRequestMessage(HttpMethod.Get, path), ct);

    public void Dispose()
    {
        lock (gate)
        {
            if (handler is null)
            {
                client?.Dispose();
            }

            client = null;
        }
    }
}
