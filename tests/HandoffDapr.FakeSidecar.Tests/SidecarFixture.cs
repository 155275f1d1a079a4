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

    /// <summary>Options whose sidecar puts <paramref name="policy"/> around calls to <c>TestActor</c>, as resiliency.yaml has daprd do.</summary>
    protected static FakeSidecarOptions WithTestActorPolicy(ActorCallPolicy policy)
    {
        var options = new FakeSidecarOptions();
        options.ActorCallPolicies["TestActor"] = policy;
        return options;
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
