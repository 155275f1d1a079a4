using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace HandoffDapr.Service.Tests.Infrastructure;

internal static class HostShutdown
{
    /// <summary>
    /// Tells the host to stop, as SIGTERM does, and returns a task that completes once it has stopped. In the test
    /// factories (minimal hosting) the app's own Run() then stops the host: the request drain, then the hosted services
    /// and the server.
    /// </summary>
    public static Task Begin(IServiceProvider services)
    {
        var lifetime = services.GetRequiredService<IHostApplicationLifetime>();
        var stopped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lifetime.ApplicationStopped.Register(() => stopped.TrySetResult());
        lifetime.StopApplication();
        return stopped.Task;
    }
}
