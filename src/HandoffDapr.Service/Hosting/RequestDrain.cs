using HandoffDapr.Service.Configuration;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Hosting;

/// <summary>
/// Lets requests (actor turns, API calls) and launch rounds in progress at shutdown finish before the server stops
/// listening and the app's services go away: a round whose provider calls shutdown stopped still has to record its
/// answers, and a response is written after the run's owner has returned. The wait runs in <see cref="StoppingAsync"/>,
/// before any hosted service (the server included) stops. In Dapr mode daprd keeps its APIs up meanwhile
/// (<c>dapr.io/block-shutdown-duration</c>) only while this app's health endpoint answers, which stops with the server.
/// A call still running at the limit (<see cref="DaprOptions.ShutdownDrain"/>; in embedded mode the provider calls'
/// grace and 5 s to record) is cut off with the process: its launch intent is saved, and the next owner reconciles it.
/// </summary>
public sealed partial class RequestDrain(IOptions<HandoffOptions> options, HostingContext hosting, TimeProvider timeProvider, ILogger<RequestDrain> logger)
    : IHostedLifecycleService, IDisposable
{
    /// <summary>How long shutdown waits for the requests in progress.</summary>
    public TimeSpan Limit => options.Value.ShutdownWaitIn(hosting.Mode);

    private readonly object gate = new();
    private TaskCompletionSource currentIdle = NewIdle(completed: true);
    private int inFlight;
    private CancellationTokenSource? deadline;
    private long deadlineStarted;
    private bool closed;

    /// <summary>Requests (actor calls, API calls) being served now, and launch rounds being finished.</summary>
    public int InFlight => Volatile.Read(ref inFlight);

    /// <summary>Shutdown has begun and waits for the calls in progress.</summary>
    public bool IsDraining { get; private set; }

    /// <summary>
    /// Counts a request arriving at the server, or says (null) that shutdown is over and the app's services are about to
    /// go away: the request must not touch them. Kestrel has stopped accepting by then; a server that has not (the test
    /// server) would otherwise run the request on disposed services.
    /// </summary>
    public IDisposable? TryEnterRequest()
    {
        lock (gate)
        {
            if (closed)
            {
                return null;
            }

            if (inFlight++ == 0)
            {
                currentIdle = NewIdle();
            }
        }

        return new Call(this);
    }

    /// <summary>
    /// Counts a call the server did not count itself (the Dapr owner's call and the round it finishes, a background
    /// round) while it runs; unlike <see cref="TryEnterRequest"/>, also once shutdown is over. Dispose it when it has
    /// ended, whichever way.
    /// </summary>
    public IDisposable Enter()
    {
        lock (gate)
        {
            if (inFlight++ == 0)
            {
                currentIdle = NewIdle();
            }
        }

        return new Call(this);
    }

    public Task StoppingAsync(CancellationToken cancellationToken) => WaitForCallsAsync(cancellationToken, close: false);

    /// <summary>
    /// Once the server has stopped, calls that reached it after <see cref="StoppingAsync"/> looked (a request already on
    /// its way) still end before the app's services go away, within what is left of the same limit. Kestrel waits for
    /// its requests anyway; a server that does not (the test server) would otherwise run them on disposed services.
    /// </summary>
    public Task StoppedAsync(CancellationToken cancellationToken) => WaitForCallsAsync(cancellationToken, close: true);

    /// <param name="close">Once nothing is in progress (or the limit is reached), take no more requests.</param>
    private async Task WaitForCallsAsync(CancellationToken cancellationToken, bool close)
    {
        lock (gate)
        {
            if (inFlight == 0)
            {
                closed |= close;
                return;
            }
        }

        var (timeLeft, left) = TimeLeft();
        IsDraining = true;
        // The wait after the server stopped has what the first left, perhaps nothing: then it is cut short at once.
        if (left > TimeSpan.Zero)
        {
            LogDraining(InFlight, left);
        }

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(timeLeft, cancellationToken);
        try
        {
            // Calls keep coming while the server listens (a reminder's round, a retried trigger): idle once is not enough,
            // the count must be zero when looked at.
            while (true)
            {
                Task waitForIdle;
                lock (gate)
                {
                    if (inFlight == 0)
                    {
                        closed |= close;
                        break;
                    }

                    waitForIdle = currentIdle.Task;
                }

                await waitForIdle.WaitAsync(stop.Token);
            }

            LogDrained();
        }
        catch (OperationCanceledException)
        {
            LogDrainCutShort(InFlight);
            lock (gate)
            {
                closed |= close;
            }
        }
    }

    public void Dispose() => deadline?.Dispose();

    /// <summary>One limit for the whole shutdown, started by the first wait; and how much of it is left.</summary>
    private (CancellationToken Token, TimeSpan Left) TimeLeft()
    {
        lock (gate)
        {
            if (deadline is null)
            {
                deadline = new CancellationTokenSource(Limit, timeProvider);
                deadlineStarted = timeProvider.GetTimestamp();
            }

            return (deadline.Token, Limit - timeProvider.GetElapsedTime(deadlineStarted));
        }
    }

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    private void Leave()
    {
        lock (gate)
        {
            if (--inFlight == 0)
            {
                currentIdle.TrySetResult();
            }
        }
    }

    private static TaskCompletionSource NewIdle(bool completed = false)
    {
        var source = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (completed)
        {
            source.SetResult();
        }

        return source;
    }

    private sealed class Call(RequestDrain drain) : IDisposable
    {
        private int disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref disposed, 1) == 0)
            {
                drain.Leave();
            }
        }
    }

    [LoggerMessage(EventId = 4201, EventName = "ShutdownDraining", Level = LogLevel.Information, Message = "Shutting down: waiting up to {Limit} for {Calls} request(s) in progress to finish before the server stops")]
    private partial void LogDraining(int calls, TimeSpan limit);

    [LoggerMessage(EventId = 4202, EventName = "ShutdownDrained", Level = LogLevel.Information, Message = "Shutting down: the requests in progress have finished")]
    private partial void LogDrained();

    [LoggerMessage(EventId = 4203, EventName = "ShutdownDrainCutShort", Level = LogLevel.Warning, Message = "Shutting down with {Calls} request(s) still in progress: their launches are reconciled by the next owner")]
    private partial void LogDrainCutShort(int calls);
}

public static class RequestDrainExtensions
{
    /// <summary>
    /// Counts every request but the health probes until its response is written: the API's, whose answers are written
    /// after the run's owner has returned and need the app's services still there, and in Dapr mode the actor runtime's
    /// (<c>/actors/...</c>: method calls and reminders).
    /// </summary>
    public static IApplicationBuilder UseRequestDrain(this IApplicationBuilder app)
    {
        var drain = app.ApplicationServices.GetRequiredService<RequestDrain>();
        return app.Use(async (context, next) =>
        {
            if (Api.HealthEndpoints.IsProbe(context.Request.Path))
            {
                await next(context);
                return;
            }

            using var call = drain.TryEnterRequest();
            if (call is null)
            {
                // Written as bytes: the problem writer's services may be gone already.
                context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
                context.Response.ContentType = "application/problem+json";
                await context.Response.Body.WriteAsync(Api.Problems.ShuttingDownJson, context.RequestAborted);
                return;
            }

            await next(context);
        });
    }
}
