namespace HandoffDapr.FakeSidecar.Tests;

/// <summary>One fake sidecar and one app per test: both start in milliseconds and share nothing.</summary>
public abstract class SidecarTest : IAsyncLifetime
{
    protected FakeDaprSidecar Sidecar { get; private set; } = null!;

    protected TestApp App { get; private set; } = null!;

    protected virtual FakeSidecarOptions Options => new();

    protected virtual string? DaprApiToken => Options.ApiToken;

    protected virtual string? AppApiToken => null;

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
