using HandoffDapr.FakeSidecar;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Tests.Infrastructure;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// The app on a real Kestrel port, called by the sidecar over a socket: the actor calls daprd makes into the app carry
/// the run as the app's own serializer writes it, which can be larger than the event it came in.
/// </summary>
public sealed class ActorCallBodyTests : IAsyncLifetime
{
    private readonly FakeCursor cursor = new();
    private DaprServiceFactory factory = null!;

    public async Task InitializeAsync() => factory = await DaprServiceFactory.StartAsync(cursor.Url, kestrel: true);

    [Fact]
    public async Task Completion_event_within_the_body_limit_reaches_its_actor_even_when_the_run_serializes_larger()
    {
        // Apostrophes and non-ASCII text are one to three bytes in the event as daprd's Go JSON writes it, and six in
        // the escaped JSON of the actor call that hands the run to its actor.
        var run = Payloads.Run(171, ["acme/shop"]);
        run["artifacts"]!["root_cause"]!["one_line_description"] = new string('\'', 120_000) + new string('é', 60_000);
        var delivery = await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", run);

        Assert.True(delivery.CloudEvent.GetRawText().Length < 1024 * 1024, "the event itself is within Handoff:MaxRequestBodyBytes");
        Assert.Equal(DeliveryOutcome.Success, delivery.Outcome);
        Assert.Equal(1, cursor.LaunchRequests);
        Assert.NotNull(factory.Sidecar.GetActorState(HandoffRunActor.ActorTypeName, "171", "snapshot"));
        // The round's answers went back to the actor in a call of their own, the run with them.
        Assert.Equal("launched", factory.Sidecar.GetActorState(HandoffRunActor.ActorTypeName, "171", "launches")!.Value[0].GetProperty("phase").GetString());
    }

    public Task DisposeAsync() => factory.DisposeAsync().AsTask().ContinueWith(_ => cursor.Dispose());
}
