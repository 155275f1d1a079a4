using HandoffDapr.Service.Embedded;

namespace HandoffDapr.Service.Tests.Embedded;

public sealed class RunLocksTests
{
    [Fact]
    public async Task One_run_is_held_by_one_caller_at_a_time_while_other_runs_proceed()
    {
        var locks = new RunLocks();
        var first = await locks.AcquireAsync(1, CancellationToken.None);

        var sameRun = locks.AcquireAsync(1, CancellationToken.None);
        var otherRun = await locks.AcquireAsync(2, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(5));

        Assert.False(sameRun.IsCompleted);
        first.Dispose();
        using var second = await sameRun.WaitAsync(TimeSpan.FromSeconds(5));
        otherRun.Dispose();
    }

    [Fact]
    public async Task Locks_are_dropped_when_nobody_holds_or_waits_for_them()
    {
        var locks = new RunLocks();
        for (var run = 0; run < 100; run++)
        {
            using var held = await locks.AcquireAsync(run, CancellationToken.None);
        }

        using var cancelled = new CancellationTokenSource();
        var holder = await locks.AcquireAsync(7, CancellationToken.None);
        var waiter = locks.AcquireAsync(7, cancelled.Token);
        await cancelled.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiter);
        Assert.Equal(1, locks.Count);
        holder.Dispose();

        Assert.Equal(0, locks.Count);
    }
}
