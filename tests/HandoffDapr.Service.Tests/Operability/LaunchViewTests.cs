using HandoffDapr.Core.Handoff;
using HandoffDapr.Service.Api;

namespace HandoffDapr.Service.Tests.Operability;

/// <summary>A launch as GET /runs/{runId}/handoff and GET /runs show it: each field from its own source.</summary>
public sealed class LaunchViewTests
{
    [Fact]
    public void Launch_view_shows_the_agents_provider_and_when_the_launch_last_changed()
    {
        var firstAttempt = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var updated = firstAttempt.AddMinutes(7);
        var launch = new RepositoryLaunch("acme/shop", "github", 42, "cursor_background_agent", 2, "autofix/1-acme-shop", null, true, null,
            LaunchPhase.Launched, 3, null, null, "bc-1", null, updated, FirstAttemptAt: firstAttempt);

        var view = LaunchView.From(launch);

        // The coding agent's provider, not the repository's host; the last change, not the first attempt.
        Assert.Equal("cursor_background_agent", view.Provider);
        Assert.Equal(updated, view.UpdatedAt);
        Assert.Equal(("acme/shop", 42L, 2, 3, "bc-1"), (view.Repository, view.IntegrationId, view.Generation, view.Attempts, view.AgentId));
    }
}
