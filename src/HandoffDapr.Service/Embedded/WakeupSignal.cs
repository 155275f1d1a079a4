namespace HandoffDapr.Service.Embedded;

/// <summary>
/// Tells the wake-up scheduler that work was just saved as due, so it runs now instead of at its next poll.
/// Signals coalesce: many notifications before the scheduler looks mean one extra pass.
/// </summary>
public class WakeupSignal
{
    private readonly SemaphoreSlim pending = new(0, 1);

    public virtual void Notify()
    {
        try
        {
            pending.Release();
        }
        catch (SemaphoreFullException)
        {
            // Already signalled; the scheduler's next pass picks this up too.
        }
    }

    /// <summary>Waits for a notification or the poll interval, whichever comes first. The scheduler calls it after each pass.</summary>
    public virtual async Task WaitAsync(TimeSpan interval, TimeProvider timeProvider, CancellationToken cancellationToken)
    {
        using var either = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var notified = pending.WaitAsync(either.Token);
        var elapsed = Task.Delay(interval, timeProvider, either.Token);
        await Task.WhenAny(notified, elapsed);
        await either.CancelAsync();
        try
        {
            // The semaphore lets go of a cancelled wait later, on a continuation: until it has, a notification would go to
            // this wait, which has already ended, and be lost to the next one.
            await notified;
        }
        catch (OperationCanceledException)
        {
        }

        cancellationToken.ThrowIfCancellationRequested();
    }
}
