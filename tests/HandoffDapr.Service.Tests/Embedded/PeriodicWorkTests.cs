using HandoffDapr.Service.Embedded;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>The loop of the wake-up schedule and the retention sweep: a pass that fails is logged and the next one comes; only shutdown ends it.</summary>
public sealed class PeriodicWorkTests
{
    /// <summary>
    /// A pass cancelled by something other than shutdown (a call's or a read's own timeout: a TaskCanceledException) is a
    /// failed pass like any other. Taken for shutdown, it would end the schedule, or the sweep, for the rest of the
    /// process's life while the service went on answering ready.
    /// </summary>
    [Fact]
    public async Task A_pass_cancelled_by_its_own_timeout_is_logged_and_the_next_pass_comes()
    {
        using var stopping = new CancellationTokenSource();
        var passes = 0;
        var failures = new List<Exception>();

        await PeriodicWork.RunAsync(
            _ => ++passes switch
            {
                1 => throw new TaskCanceledException("a call's own timeout"),
                2 => throw new InvalidOperationException("the store could not be read"),
                _ => stopping.CancelAsync(),
            },
            _ => Task.CompletedTask,
            failures.Add,
            stopping.Token).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(3, passes);
        Assert.Collection(failures, first => Assert.IsType<TaskCanceledException>(first), second => Assert.IsType<InvalidOperationException>(second));
    }
}
