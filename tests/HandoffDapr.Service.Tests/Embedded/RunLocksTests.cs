using HandoffDapr.Service.Hosting;

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

    /// <summary>
    /// The retention sweep takes a run's lock only if nobody holds or awaits it (<see cref="RunLocks.TryAcquire"/>): a run
    /// held by a turn is passed over, and one it took is held, so a turn that comes meanwhile waits until it lets go.
    /// </summary>
    [Fact]
    public async Task A_run_held_is_passed_over_by_a_try_and_a_run_taken_by_a_try_is_held()
    {
        var locks = new RunLocks();
        using (await locks.AcquireAsync(1, CancellationToken.None))
        {
            Assert.Null(locks.TryAcquire(1));
        }

        var taken = locks.TryAcquire(1);
        Assert.NotNull(taken);
        var waiting = locks.AcquireAsync(1, CancellationToken.None);
        Assert.Null(locks.TryAcquire(1));
        Assert.False(waiting.IsCompleted);

        taken.Dispose();
        (await waiting.WaitAsync(TimeSpan.FromSeconds(5))).Dispose();
        Assert.Equal(0, locks.Count);
    }

    /// <summary>
    /// A turn that waited for a run the retention sweep took (<see cref="RunLocks.TryAcquire"/>) holds it as any turn does:
    /// the sweep letting go must not drop the run's lock while that turn holds it, or the next turn would take a lock of
    /// its own at once and two turns would load, decide and save the run together.
    /// </summary>
    [Fact]
    public async Task A_turn_that_waited_for_a_run_taken_by_a_try_holds_it_against_the_next_turn()
    {
        var locks = new RunLocks();
        var taken = locks.TryAcquire(1);
        Assert.NotNull(taken);
        var waiting = locks.AcquireAsync(1, CancellationToken.None);
        taken.Dispose();
        var turn = await waiting.WaitAsync(TimeSpan.FromSeconds(5));

        var next = locks.AcquireAsync(1, CancellationToken.None);

        Assert.False(next.IsCompleted);
        Assert.Null(locks.TryAcquire(1));
        turn.Dispose();
        (await next.WaitAsync(TimeSpan.FromSeconds(5))).Dispose();
        Assert.Equal(0, locks.Count);
    }

    /// <summary>
    /// A hold let go twice (a using block and a cleanup both disposing it) is let go once: a second release would let the
    /// next waiter in too while the first still holds the run, and two turns would load, decide and save it at once.
    /// </summary>
    [Fact]
    public async Task A_hold_disposed_twice_lets_in_one_waiter_not_two()
    {
        var locks = new RunLocks();
        var holder = await locks.AcquireAsync(1, CancellationToken.None);
        var first = locks.AcquireAsync(1, CancellationToken.None);
        var second = locks.AcquireAsync(1, CancellationToken.None);

        holder.Dispose();
        holder.Dispose();

        var firstHold = await first.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.False(second.IsCompleted);
        firstHold.Dispose();
        (await second.WaitAsync(TimeSpan.FromSeconds(5))).Dispose();
        Assert.Equal(0, locks.Count);
    }
}
