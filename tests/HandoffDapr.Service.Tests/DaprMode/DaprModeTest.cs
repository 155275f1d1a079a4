using System.Globalization;
using System.Text.Json;
using HandoffDapr.FakeSidecar;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// One service in Dapr mode per test, with its fake sidecar, its Cursor and its clock, and a client that calls as daprd.
/// Lower-case fields rather than properties: the tests read them as they read their own fields.
/// </summary>
public abstract class DaprModeTest : IAsyncLifetime
{
    protected const string Actor = HandoffRunActor.ActorTypeName;
    protected readonly FakeCursor cursor = new();
    protected readonly FakeTimeProvider time = new(DateTimeOffset.UtcNow);
    protected DaprServiceFactory factory = null!;
    protected HttpClient client = null!;

    /// <summary>Starts the service; a class whose tests need other options (no fake clock, Kestrel, resiliency) overrides it.</summary>
    protected virtual Task<DaprServiceFactory> StartServiceAsync() => DaprServiceFactory.StartAsync(cursor.Url, time: time);

    /// <summary>The phase of the run's first launch as its actor stored it.</summary>
    protected string? LaunchPhase(long run) => LaunchPhase(factory.Sidecar, run);

    /// <summary>The same, for a test that starts a service of its own.</summary>
    internal static string? LaunchPhase(FakeDaprSidecar sidecar, long run) =>
        sidecar.GetActorState(Actor, run.ToString(CultureInfo.InvariantCulture), "launches")!.Value[0].GetProperty("phase").GetString();

    /// <summary>The run's <c>coding_agents</c> as its actor stored them.</summary>
    protected JsonElement.ObjectEnumerator Agents(long run) =>
        factory.Sidecar.GetActorState(Actor, run.ToString(CultureInfo.InvariantCulture), "coding_agents")!.Value.EnumerateObject();

    public async Task InitializeAsync()
    {
        factory = await StartServiceAsync();
        client = factory.CreateSidecarClient();
    }

    public virtual async Task DisposeAsync()
    {
        client.Dispose();
        try
        {
            await factory.DisposeAsync();
        }
        finally
        {
            cursor.Dispose();
        }
    }
}

/// <summary>
/// The fake sidecar's channel to an app whose port has nothing listening (its process down, or not started yet): every
/// call daprd makes into it is refused.
/// </summary>
internal sealed class RefusingAppChannel : HttpMessageHandler
{
    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
        throw new HttpRequestException("dial tcp 127.0.0.1:5080: connect: connection refused");
}
