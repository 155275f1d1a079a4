using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// Handoff:Integrations:*:Binding names a binding daprd does not have (a typo, a component not deployed): daprd answers
/// "couldn't find output binding …" before any request leaves it (dapr pkg/runtime/processor/binding/send.go).
/// </summary>
public sealed class MisnamedBindingTests
{
    [Fact]
    public async Task Launch_through_a_binding_daprd_does_not_have_is_not_treated_as_maybe_sent_and_the_log_names_the_binding()
    {
        using var cursor = new FakeCursor();
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(
            cursor.Url, time: new FakeTimeProvider(DateTimeOffset.UtcNow), logs: logs,
            settings: new Dictionary<string, string?> { ["Handoff:Integrations:42:Binding"] = "coding-agent-cursr" });

        var answer = await factory.CreateSidecarClient().PostJsonAsync("/runs/180/handoff", Payloads.Trigger(Payloads.Run(180, ["acme/shop"], automation: false)));
        await answer.ReadJsonAsync();

        // Nothing left daprd: the next attempt need not look the agent up first (through the same missing binding).
        var launch = factory.Sidecar.GetActorState(HandoffRunActor.ActorTypeName, "180", "launches")!.Value[0];
        Assert.NotEqual("outcome_unknown", launch.GetProperty("phase").GetString());
        Assert.Equal(0, cursor.LaunchRequests);
        var refused = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "BindingRefused");
        Assert.Equal(LogLevel.Error, refused.Level);
        Assert.Contains("coding-agent-cursr", refused.Message, StringComparison.Ordinal);
        Assert.Contains("couldn't find output binding", refused.Message, StringComparison.Ordinal);
    }
}
