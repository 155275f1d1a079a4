namespace HandoffDapr.Service.Embedded;

/// <summary>The loop of embedded mode's background services: work, then wait, until shutdown; a failed pass is logged and the next one comes.</summary>
internal static class PeriodicWork
{
    public static async Task RunAsync(Func<CancellationToken, Task> work, Func<CancellationToken, Task> wait, Action<Exception> failed, CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await work(stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception exception)
            {
                failed(exception);
            }

            try
            {
                await wait(stoppingToken);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
    }
}
