using HandoffDapr.Service.Embedded;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>The schedule's signal: a notification ends the wait for the poll interval, and none is lost.</summary>
public sealed class WakeupSignalTests
{
    /// <summary>
    /// A wait that ended on the poll interval leaves nothing waiting on the signal: a notification after it, even at once,
    /// ends the next wait. Left waiting, the old wait took the notification, and the launches it announced waited a whole
    /// interval; and the semaphore lets go of a cancelled waiter only on a continuation of its own, so a notification
    /// right after the wait returned went to the ended wait now and then, not always: hence 200 rounds.
    /// </summary>
    [Fact]
    public async Task Notification_right_after_a_wait_ended_on_its_interval_is_never_lost()
    {
        for (var i = 0; i < 200; i++)
        {
            var time = new FakeTimeProvider();
            var signal = new WakeupSignal();
            var first = signal.WaitAsync(TimeSpan.FromSeconds(1), time, CancellationToken.None);
            time.Advance(TimeSpan.FromSeconds(1));
            await first.WaitAsync(TimeSpan.FromSeconds(10));

            signal.Notify();

            await signal.WaitAsync(TimeSpan.FromDays(1), time, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        }
    }

    /// <summary>
    /// A new signal holds nothing: the scheduler's first wait, after its pass at start, lasts its whole poll interval unless
    /// work is saved as due, and is not ended at once by a notification nobody made.
    /// </summary>
    [Fact]
    public async Task First_wait_with_nothing_notified_lasts_until_its_interval()
    {
        var time = new FakeTimeProvider();
        var signal = new WakeupSignal();
        var first = signal.WaitAsync(TimeSpan.FromSeconds(1), time, CancellationToken.None);

        // A second of real time lets a wait ended by a signal finish; one waiting on the fake clock cannot, as it stands still.
        await Task.WhenAny(first, Task.Delay(TimeSpan.FromSeconds(1)));
        Assert.False(first.IsCompleted);
        time.Advance(TimeSpan.FromSeconds(1));
        await first.WaitAsync(TimeSpan.FromSeconds(10));
    }

    /// <summary>
    /// Notifications made while nobody waits (a burst of saved events) coalesce into one early pass, and never throw into
    /// the request that saved the work, however many come.
    /// </summary>
    [Fact]
    public async Task Notifications_while_nobody_waits_never_throw_and_end_only_the_next_wait()
    {
        var time = new FakeTimeProvider();
        var signal = new WakeupSignal();
        for (var i = 0; i < 5; i++)
        {
            signal.Notify();
        }

        await signal.WaitAsync(TimeSpan.FromDays(1), time, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        var second = signal.WaitAsync(TimeSpan.FromSeconds(1), time, CancellationToken.None);

        // Nothing is left of the burst: only the interval ends the second wait (a second of real time lets a wait that
        // took a left-over notification finish; one that did not cannot, as the fake clock stands still).
        await Task.WhenAny(second, Task.Delay(TimeSpan.FromSeconds(1)));
        Assert.False(second.IsCompleted);
        time.Advance(TimeSpan.FromSeconds(1));
        await second.WaitAsync(TimeSpan.FromSeconds(10));
    }
}
