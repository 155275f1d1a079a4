using HandoffDapr.Core.Handoff;
using HandoffDapr.Service.Embedded;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>Two processes on one SQLite file: each due wake-up is claimed by exactly one of them, and versions stop blind overwrites.</summary>
public sealed class WakeupLeaseTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));

    [Fact]
    public async Task Concurrent_claims_from_two_stores_never_take_the_same_wake_up()
    {
        var path = temp.File("shared.db");
        var first = new SqliteRunStore(path, time);
        var second = new SqliteRunStore(path, time);
        for (var run = 1; run <= 200; run++)
        {
            await first.SaveAsync(Pending(run), 0, CancellationToken.None);
        }

        time.Advance(TimeSpan.FromMinutes(1));
        var claims = await Task.WhenAll(Enumerable.Range(0, 20).Select(i =>
            (i % 2 == 0 ? first : second).ClaimDueWakeupsAsync($"owner-{i % 2}", time.GetUtcNow(), TimeSpan.FromMinutes(5), 16, CancellationToken.None)));

        var all = claims.SelectMany(c => c).ToList();
        Assert.Equal(all.Count, all.Distinct().Count());
        Assert.Equal(200, all.Count);
        Assert.Empty(await first.ClaimDueWakeupsAsync("owner-0", time.GetUtcNow(), TimeSpan.FromMinutes(5), 16, CancellationToken.None));

        // An expired lease can be taken over (the claimer died).
        time.Advance(TimeSpan.FromMinutes(6));
        Assert.Equal(16, (await second.ClaimDueWakeupsAsync("owner-1", time.GetUtcNow(), TimeSpan.FromMinutes(5), 16, CancellationToken.None)).Count);
    }

    [Fact]
    public async Task Save_with_a_stale_version_is_refused()
    {
        var store = new SqliteRunStore(temp.File("versions.db"), time);
        var version = await store.SaveAsync(Pending(1), 0, CancellationToken.None);
        await store.SaveAsync(Pending(1), version, CancellationToken.None);

        await Assert.ThrowsAsync<RunVersionConflictException>(() => store.SaveAsync(Pending(1), version, CancellationToken.None));
        await Assert.ThrowsAsync<RunVersionConflictException>(() => store.SaveAsync(Pending(1), 0, CancellationToken.None));
    }

    private RunHandoffState Pending(long runId) => RunHandoffState.New(runId) with
    {
        Launches = [new RepositoryLaunch("acme/shop", "github", 42, "cursor_background_agent", 1, "b-abc123", null, true, null, LaunchPhase.RetryScheduled, 1, null, time.GetUtcNow().AddSeconds(30), null, "provider_unavailable", time.GetUtcNow())],
    };

    public void Dispose() => temp.Dispose();
}
