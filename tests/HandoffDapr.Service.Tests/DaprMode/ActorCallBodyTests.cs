using HandoffDapr.FakeSidecar;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// The app on a real Kestrel port, called by the sidecar over a socket: the actor calls daprd makes into the app carry
/// the run as the app's own serializer writes it, which can be larger than the event it came in.
/// </summary>
public sealed class ActorCallBodyTests : DaprModeTest
{
    // On a real Kestrel port (its body limits apply), and on the system clock: nothing here moves time.
    protected override Task<DaprServiceFactory> StartServiceAsync() => DaprServiceFactory.StartAsync(cursor.Url, kestrel: true);

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
        Assert.Equal("launched", LaunchPhase(171));
    }

    /// <summary>
    /// An event filled to Handoff:MaxRequestBodyBytes with apostrophes, each six bytes (<c>\u0027</c>) in the actor call:
    /// the actor routes take six times the event's limit, where Kestrel's limit for every other route is the event's own.
    /// </summary>
    [Fact]
    public async Task Completion_event_filled_to_the_body_limit_with_escaped_characters_reaches_its_actor()
    {
        var limit = factory.Services.GetRequiredService<IOptions<HandoffOptions>>().Value.MaxRequestBodyBytes;
        var run = Payloads.Run(172, ["acme/shop"]);
        // Room for the rest of the run and the CloudEvent around it.
        run["artifacts"]!["root_cause"]!["one_line_description"] = new string('\'', (int)limit - (32 * 1024));
        var delivery = await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", run);

        Assert.True(delivery.CloudEvent.GetRawText().Length < limit, "the event itself is within Handoff:MaxRequestBodyBytes");
        Assert.Equal(DeliveryOutcome.Success, delivery.Outcome);
        Assert.Equal(1, cursor.LaunchRequests);
        Assert.Equal("launched", LaunchPhase(172));
    }
}
