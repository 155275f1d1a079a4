using System.Net;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// Dapr-mode lines the runbook tells an operator to act on, as the fake sidecar makes them happen: their level and the
/// fields the runbook names, and nothing the caller must not see.
/// </summary>
public sealed class DaprLogLineTests : IDisposable
{
    private const string Actor = HandoffRunActor.ActorTypeName;
    private readonly FakeCursor cursor = new();

    [Fact]
    public async Task A_turn_the_state_store_fails_is_an_error_line_naming_run_and_method_with_the_stores_reason_while_the_caller_gets_503_without_it()
    {
        const string storeReason = "injected fault: redis connection refused 7f3a";
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, time: new FakeTimeProvider(DateTimeOffset.UtcNow), logs: logs);
        var client = factory.CreateSidecarClient();
        using var storeDown = factory.Sidecar.FailActorStateOperations(call => call.ActorId == "610", storeReason);

        var trigger = await client.PostJsonAsync("/runs/610/handoff", Payloads.Trigger(Payloads.Run(610, ["acme/shop"], automation: false)));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, trigger.StatusCode);
        Assert.DoesNotContain("7f3a", await trigger.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Equal(0, cursor.LaunchRequests);
        var failed = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "ActorTurnFailed");
        Assert.Equal(LogLevel.Error, failed.Level);
        Assert.Equal(
            ("610", "610", nameof(IHandoffRunActor.TriggerAsync)),
            (failed.GetStructuredStateValue("RunId"), failed.GetStructuredStateValue("ActorId"), failed.GetStructuredStateValue("Method")));
        // The operator's line carries the reason (the runbook: "the exception says which"), the caller's answer does not.
        Assert.Contains("7f3a", failed.Exception!.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_agents_update_the_pubsub_refuses_is_a_warning_naming_the_run_and_the_change_stays_saved()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, time: new FakeTimeProvider(DateTimeOffset.UtcNow), logs: logs);
        // daprd without the pub/sub component (or its broker refusing): "pubsub pubsub is not found".
        factory.Sidecar.Options.PubSubNames.Clear();

        var trigger = await factory.CreateSidecarClient().PostJsonAsync("/runs/611/handoff", Payloads.Trigger(Payloads.Run(611, ["acme/shop"], automation: false)));

        Assert.Equal(HttpStatusCode.Accepted, trigger.StatusCode);
        Assert.Empty(factory.Sidecar.Published);
        var failed = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "AgentsUpdatePublishFailed");
        Assert.Equal(LogLevel.Warning, failed.Level);
        Assert.Equal("611", failed.GetStructuredStateValue("RunId"));
        Assert.NotNull(failed.Exception);
        var agents = factory.Sidecar.GetActorState(Actor, "611", HandoffRunActor.CodingAgentsKey)!.Value;
        Assert.Single(agents.EnumerateObject());
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "ActorTurnFailed");
    }

    [Fact]
    public async Task An_agents_update_the_pubsub_does_not_take_in_time_is_given_up_logged_and_the_turn_ends()
    {
        var logs = new FakeLogCollector();
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, time: time, logs: logs);
        // A broker that never answers: the publish waits until the app gives up on it.
        var waiting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        factory.Sidecar.BeforePublish = async (_, ct) =>
        {
            waiting.TrySetResult();
            await Task.Delay(Timeout.Infinite, ct);
        };

        var trigger = factory.CreateSidecarClient().PostJsonAsync("/runs/613/handoff", Payloads.Trigger(Payloads.Run(613, ["acme/shop"], automation: false)));
        await waiting.Task.WaitAsync(TimeSpan.FromSeconds(30));
        time.Advance(HandoffRunActor.PublishTimeout);

        Assert.Equal(HttpStatusCode.Accepted, (await trigger.WaitAsync(TimeSpan.FromSeconds(30))).StatusCode);
        var failed = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "AgentsUpdatePublishFailed");
        Assert.Equal("613", failed.GetStructuredStateValue("RunId"));
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "ActorTurnFailed");
    }

    /// <summary>
    /// The binding's url points where nothing listens: daprd's binding answers Go's dial error. The runbook's
    /// ProviderTransportFailure tells the operator, by Kind and RequestSent, whether the launch may have arrived.
    /// </summary>
    [Fact]
    public async Task A_provider_the_binding_cannot_connect_to_is_a_warning_of_kind_network_with_nothing_sent_and_no_address_or_key()
    {
        var logs = new FakeLogCollector();
        // Nothing listens on port 9 of loopback.
        await using var factory = await DaprServiceFactory.StartAsync("http://127.0.0.1:9", time: new FakeTimeProvider(DateTimeOffset.UtcNow), logs: logs);

        var trigger = await factory.CreateSidecarClient().PostJsonAsync("/runs/612/handoff", Payloads.Trigger(Payloads.Run(612, ["acme/shop"], automation: false)));

        Assert.Equal(HttpStatusCode.Accepted, trigger.StatusCode);
        var failed = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "ProviderTransportFailure");
        Assert.Equal(LogLevel.Warning, failed.Level);
        Assert.Equal(("Network", "False"), (failed.GetStructuredStateValue("Kind"), failed.GetStructuredStateValue("RequestSent")));
        // The whole line as the JSON console writes it: its message, exception, fields and scopes.
        Assert.False(LogLines.Carry(failed, "127.0.0.1"), LogLines.Whole(failed));
        Assert.DoesNotContain(logs.GetSnapshot(), record => LogLines.Carry(record, DaprServiceFactory.BindingApiKey));
        // Nothing was sent, so nothing is to be looked for: the launch is retried as provider_unavailable.
        var launch = factory.Sidecar.GetActorState(Actor, "612", HandoffRunActor.LaunchesKey)!.Value[0];
        Assert.Equal(("retry_scheduled", "provider_unavailable"), (launch.GetProperty("phase").GetString(), launch.GetProperty("failure_type").GetString()));
    }

    public void Dispose() => cursor.Dispose();
}
