using System.Collections.Concurrent;
using System.Diagnostics;
using WireMock;

namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>
/// The requests this test process's HTTP clients sent to a fake provider that the fake has not carried out yet.
/// On a loaded machine a request the service gave up on (timed out) can wait in the fake's queue for seconds and then be
/// carried out; a real provider carries out a request at once or never, long before the service's next attempt looks
/// for what it made. A test that moves its clock past a retry's delay waits here first (<see cref="WaitUntilServedAsync"/>);
/// a request still unserved by then is lost, and the fake must not carry it out when it comes (<see cref="Serve"/>).
/// Each watched request is numbered in a header as it leaves (HttpClient's diagnostic "request" event, written by the
/// sending handler before the request goes on the wire).
/// </summary>
public sealed class UnservedRequests : IDisposable
{
    public const string Header = "X-Test-Request-Sequence";

    private static readonly ConcurrentDictionary<UnservedRequests, byte> Live = new();
    private static long sequence;

    private readonly Func<HttpRequestMessage, bool> watches;
    private readonly Lock gate = new();
    private readonly HashSet<long> unserved = [];
    private readonly HashSet<long> serving = [];
    private readonly HashSet<long> lost = [];

    static UnservedRequests() => DiagnosticListener.AllListeners.Subscribe(new Observer<DiagnosticListener>(listener =>
    {
        if (listener.Name == "HttpHandlerDiagnosticListener")
        {
            // Only the request event: no activity is made for the process's calls on our account.
            listener.Subscribe(new Observer<KeyValuePair<string, object?>>(OnEvent), name => name == "System.Net.Http.Request");
        }
    }));

    /// <param name="watches">Which requests to number: those to the fake's address that it may carry out late.</param>
    public UnservedRequests(Func<HttpRequestMessage, bool> watches)
    {
        this.watches = watches;
        Live.TryAdd(this, 0);
    }

    /// <summary>Sent and not yet carried out: not yet served, or being served.</summary>
    public int Unfinished
    {
        get
        {
            lock (gate)
            {
                return unserved.Count + serving.Count;
            }
        }
    }

    /// <summary>
    /// Called by the fake as it begins to serve a request, and disposed once it has carried it out. Lost for a request
    /// given up as lost earlier: the fake must not carry that one out.
    /// </summary>
    public Serving Serve(IRequestMessage request)
    {
        var number = request.Headers?.FirstOrDefault(h => string.Equals(h.Key, Header, StringComparison.OrdinalIgnoreCase)).Value?.FirstOrDefault();
        if (!long.TryParse(number, out var n))
        {
            return new Serving(this, null, Lost: false);
        }

        lock (gate)
        {
            unserved.Remove(n);
            if (lost.Contains(n))
            {
                return new Serving(this, null, Lost: true);
            }

            serving.Add(n);
            return new Serving(this, n, Lost: false);
        }
    }

    public readonly record struct Serving(UnservedRequests Requests, long? Number, bool Lost) : IDisposable
    {
        public void Dispose()
        {
            if (Number is { } n)
            {
                lock (Requests.gate)
                {
                    Requests.serving.Remove(n);
                }
            }
        }
    }

    /// <summary>
    /// Waits (up to <paramref name="limit"/>) until the fake has carried out every request sent to it; those it has not
    /// begun to serve by then are lost.
    /// </summary>
    /// <returns>How many were given up as lost.</returns>
    public async Task<int> WaitUntilServedAsync(TimeSpan limit)
    {
        var waited = Stopwatch.StartNew();
        while (Unfinished > 0 && waited.Elapsed < limit)
        {
            await Task.Delay(5);
        }

        lock (gate)
        {
            var count = unserved.Count;
            lost.UnionWith(unserved);
            unserved.Clear();
            return count;
        }
    }

    public void Dispose() => Live.TryRemove(this, out _);

    private static void OnEvent(KeyValuePair<string, object?> e)
    {
        if (e.Value?.GetType().GetProperty("Request")?.GetValue(e.Value) is not HttpRequestMessage request)
        {
            return;
        }

        foreach (var tracker in Live.Keys)
        {
            if (tracker.watches(request))
            {
                var n = Interlocked.Increment(ref sequence);
                request.Headers.TryAddWithoutValidation(Header, n.ToString(System.Globalization.CultureInfo.InvariantCulture));
                lock (tracker.gate)
                {
                    tracker.unserved.Add(n);
                }

                return;
            }
        }
    }

    private sealed class Observer<T>(Action<T> onNext) : IObserver<T>
    {
        public void OnNext(T value) => onNext(value);

        public void OnError(Exception error)
        {
        }

        public void OnCompleted()
        {
        }
    }
}
