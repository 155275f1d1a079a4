using HandoffDapr.Service.Embedded;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>The schedule's signal: a notification ends the wait for the poll interval, and none is lost.</summary>
public sealed class WakeupSignalTests
{
    /// <summary>
    /// A wait that ended on the poll interval leaves nothing waiting on the signal: a notification after it ends the
    /// next wait. Left waiting, the old wait took the notification, and the launches it announced waited a whole interval.
    /// </summary>
    [Fact]
    public async Task Notification_after_a_wait_that_ended_on_its_interval_ends_the_next_wait()
    {
        var time = new FakeTimeProvider();
        var signal = new WakeupSignal();
        var first = signal.WaitAsync(TimeSpan.FromSeconds(1), time, CancellationToken.None);
        time.Advance(TimeSpan.FromSeconds(1));
        await first.WaitAsync(TimeSpan.FromSeconds(10));

        signal.Notify();

        // The interval is not reached (the fake clock stands still): only the notification can end this wait.
        await signal.WaitAsync(TimeSpan.FromDays(1), time, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
    }

    /// <summary>
    /// The same, as soon as the wait has returned: the semaphore lets go of the ended wait's waiter on a continuation of
    /// its own, and a notification before that went to the ended wait. Repeated, as it lost one now and then, not always.
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
}
