using HandoffDapr.Service.Hosting;

namespace HandoffDapr.Service.Tests.Operability;

/// <summary>
/// A provider call cut by shutdown is a known cause, logged on one line; any other cancellation is unexpected, and is
/// logged as a fault with its stack (it was taken for shutdown and logged without one).
/// </summary>
public sealed class OwnerUnavailableCauseTests
{
    [Fact]
    public async Task A_call_cancelled_by_shutdown_is_a_known_cause()
    {
        using var stopping = new CancellationTokenSource();
        await stopping.CancelAsync();

        var refused = await Assert.ThrowsAsync<RunOwnerUnavailableException>(() =>
            RunOwnerUnavailableException.WhenStoppedAsync(() => Task.FromCanceled<int>(stopping.Token), stopping.Token));

        Assert.True(refused.ShuttingDown);
        Assert.Equal("the service is shutting down", refused.KnownCause);
    }

    [Fact]
    public async Task A_call_cancelled_by_anything_else_is_a_fault_not_shutdown()
    {
        using var stopping = new CancellationTokenSource();
        using var other = new CancellationTokenSource();
        await other.CancelAsync();

        var refused = await Assert.ThrowsAsync<RunOwnerUnavailableException>(() =>
            RunOwnerUnavailableException.WhenStoppedAsync(() => Task.FromCanceled<int>(other.Token), stopping.Token));

        Assert.False(refused.ShuttingDown);
        Assert.Null(refused.KnownCause);
        Assert.IsAssignableFrom<OperationCanceledException>(refused.InnerException);
    }
}
