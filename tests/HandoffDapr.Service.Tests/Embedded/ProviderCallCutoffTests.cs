using HandoffDapr.Service.Hosting;
using Microsoft.Extensions.Hosting.Internal;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// The cut-off of provider calls at shutdown, on its own: it is what ends a call a provider never answers, so that shutdown
/// does not wait on it (each mode's grace is validated between zero and five minutes).
/// </summary>
public sealed class ProviderCallCutoffTests
{
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 12, 2, 10, 0, 0, TimeSpan.Zero));
    private readonly ApplicationLifetime lifetime = new(NullLogger<ApplicationLifetime>.Instance);

    /// <summary>A grace of zero cuts the calls as shutdown begins: it must not leave them uncut, waited on until they answer.</summary>
    [Fact]
    public void With_no_grace_provider_calls_are_cut_as_shutdown_begins()
    {
        using var cutoff = new ProviderCallCutoff(lifetime, TimeSpan.Zero, time);
        Assert.False(cutoff.Token.IsCancellationRequested);

        lifetime.StopApplication();

        Assert.True(cutoff.Token.IsCancellationRequested);
    }

    [Fact]
    public void Provider_calls_are_cut_when_the_grace_after_shutdown_began_is_over_on_the_services_clock()
    {
        using var cutoff = new ProviderCallCutoff(lifetime, TimeSpan.FromSeconds(20), time);
        time.Advance(TimeSpan.FromMinutes(5));
        Assert.False(cutoff.Token.IsCancellationRequested, "cut before shutdown began");

        lifetime.StopApplication();
        time.Advance(TimeSpan.FromSeconds(20) - TimeSpan.FromTicks(1));
        Assert.False(cutoff.Token.IsCancellationRequested, "cut before the grace was over");
        time.Advance(TimeSpan.FromTicks(1));

        Assert.True(cutoff.Token.IsCancellationRequested);
    }
}
