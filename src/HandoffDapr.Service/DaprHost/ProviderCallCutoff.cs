using HandoffDapr.Service.Configuration;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.DaprHost;

/// <summary>
/// When shutdown stops the provider calls of launch rounds, polls, stops and follow-ups still under way: a grace
/// (<see cref="DaprOptions.EffectiveProviderCallGrace"/>) after shutdown begins. A call answered within it is recorded as it
/// answered, so a rolling update does not turn launches that were about to answer into outcomes to reconcile; what
/// is still unanswered then is stopped and recorded as unknown while the drain keeps daprd's APIs up.
/// </summary>
public sealed class ProviderCallCutoff : IDisposable
{
    private readonly CancellationTokenSource cutoff;
    private readonly CancellationTokenRegistration onStopping;

    public ProviderCallCutoff(IHostApplicationLifetime lifetime, IOptions<HandoffOptions> options, TimeProvider timeProvider)
    {
        var grace = options.Value.Dapr.EffectiveProviderCallGrace;
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
