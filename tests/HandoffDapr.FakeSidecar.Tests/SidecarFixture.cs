namespace HandoffDapr.FakeSidecar.Tests;

/// <summary>One fake sidecar and one app per test: both start in milliseconds and share nothing.</summary>
public abstract class SidecarTest : IAsyncLifetime
{
    protected FakeDaprSidecar Sidecar { get; private set; } = null!;

    protected TestApp App { get; private set; } = null!;

    protected virtual FakeSidecarOptions Options => new();

    protected virtual string? DaprApiToken => Options.ApiToken;

    protected virtual string? AppApiToken => null;

    /// <summary>A proxy to the test app's <c>TestActor</c> with this id.</summary>
    protected ITestActor Proxy(string id) => App.ProxyFactory.CreateActorProxy<ITestActor>(new Dapr.Actors.ActorId(id), "TestActor");

    /// <summary>
    /// Options whose sidecar puts <paramref name="policy"/> around calls to <c>TestActor</c>, as resiliency.yaml has daprd
    /// do, on <paramref name="clock"/> when given (the test then moves the deadlines).
    /// </summary>
    protected static FakeSidecarOptions WithTestActorPolicy(ActorCallPolicy policy, TimeProvider? clock = null)
    {
        var options = new FakeSidecarOptions { TimeProvider = clock ?? TimeProvider.System };
        options.ActorCallPolicies["TestActor"] = policy;
        return options;
    }

    /// <summary>Waits (bounded: 10 s) for something the app or the sidecar does on its own time.</summary>
    internal static async Task WaitUntil(Func<bool> condition)
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), "condition not met in 10 s");
            await Task.Delay(10);
        }
    }

    public async Task InitializeAsync()
    {
        Sidecar = await FakeDaprSidecar.StartAsync(Options);
        App = await TestApp.StartAsync(Sidecar, DaprApiToken, AppApiToken);
    }

    public async Task DisposeAsync()
    {
        await App.DisposeAsync();
        await Sidecar.DisposeAsync();
    }
}
