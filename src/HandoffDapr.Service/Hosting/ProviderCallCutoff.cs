using HandoffDapr.Service.Configuration;

namespace HandoffDapr.Service.Hosting;

/// <summary>
/// When shutdown stops the provider calls of launch rounds, polls, stops and follow-ups still under way: a grace after
/// shutdown begins (<see cref="DaprOptions.EffectiveProviderCallGrace"/>, <see cref="EmbeddedOptions.ProviderCallGrace"/>).
/// A call answered within it is recorded as it answered, so a restart or rolling update does not turn launches that were
/// about to answer into outcomes to reconcile; what is still unanswered then is stopped and recorded as unknown.
/// </summary>
public sealed class ProviderCallCutoff : IDisposable
{
    private readonly CancellationTokenSource cutoff;
    private readonly CancellationTokenRegistration onStopping;

    public ProviderCallCutoff(IHostApplicationLifetime lifetime, TimeSpan grace, TimeProvider timeProvider)
    {
        // Its timer runs on the TimeProvider, so tests can move through the grace.
        cutoff = new CancellationTokenSource(Timeout.InfiniteTimeSpan, timeProvider);
        onStopping = lifetime.ApplicationStopping.Register(() =>
        {
            if (grace <= TimeSpan.Zero)
            {
                cutoff.Cancel();
            }
            else
            {
                cutoff.CancelAfter(grace);
            }
        });
    }

    /// <summary>Cancelled once the grace after the start of shutdown is over.</summary>
    public CancellationToken Token => cutoff.Token;

    public void Dispose()
    {
        onStopping.Dispose();
        cutoff.Dispose();
    }
}
