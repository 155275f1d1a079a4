using System.Net;
using System.Net.Sockets;
using System.Text;
using Dapr.Client;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// Readiness in Dapr mode asks daprd's metadata for what the app needs (issue 8: "sidecar and its components healthy"):
/// a component every call needs, misnamed or not deployed, keeps the app out of traffic; an integration's missing binding
/// is only logged. The log says which, once per change.
/// </summary>
public sealed class SidecarReadinessTests : IDisposable
{
    private readonly FakeCursor cursor = new();

    [Fact]
    public async Task A_binding_daprd_has_not_loaded_is_logged_once_and_does_not_keep_the_app_out_of_traffic()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(
            cursor.Url, logs: logs, settings: new Dictionary<string, string?> { ["Handoff:Integrations:43:Binding"] = "coding-agent-copilot-eu" });
        var client = factory.CreateClient();

        var first = await client.GetAsync("/readyz");
        var second = await client.GetAsync("/readyz");
        factory.Sidecar.AddHttpBinding("coding-agent-copilot-eu", new Uri(cursor.Url));
        var deployed = await client.GetAsync("/readyz");

        // Only integration 43's launches would fail: the pod still serves the rest.
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        Assert.Equal(HttpStatusCode.OK, deployed.StatusCode);
        var missing = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "SidecarBindingsMissing");
        Assert.Equal(LogLevel.Warning, missing.Level);
        Assert.Contains("coding-agent-copilot-eu (Handoff:Integrations:43:Binding)", missing.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("coding-agent-cursor", missing.Message, StringComparison.Ordinal);
        Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "SidecarReadyAgain");
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "SidecarNotReady");
    }

    [Fact]
    public async Task A_pubsub_component_of_another_name_keeps_the_app_not_ready_and_the_log_names_it_once()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, logs: logs, settings: new Dictionary<string, string?>
        {
            ["Handoff:Dapr:PubSubName"] = "events",
            ["Handoff:Integrations:43:Binding"] = "coding-agent-copilot-eu",
        });
        var client = factory.CreateClient();

        var first = await client.GetAsync("/readyz");
        // A binding deployed meanwhile changes nothing that is said: the app is still not ready, for the same reason.
        factory.Sidecar.AddHttpBinding("coding-agent-copilot-eu", new Uri(cursor.Url));
        var second = await client.GetAsync("/readyz");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, first.StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, second.StatusCode);
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "SidecarBindingsMissing");
        // The probe's answer names nothing; the log does, once for the two refused probes, as a warning from the start.
        Assert.DoesNotContain("events", await first.Content.ReadAsStringAsync(), StringComparison.OrdinalIgnoreCase);
        var notReady = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "SidecarNotReady");
        Assert.Equal(LogLevel.Warning, notReady.Level);
        Assert.Contains("no pub/sub component named events (Handoff:Dapr:PubSubName)", notReady.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// With <c>Handoff:RunRetention</c> set, every save that settles a run carries <c>ttlInSeconds</c>, which daprd refuses
    /// without its ActorStateTTL feature: a daprd whose Configuration leaves it off keeps the app out of traffic, and the
    /// log says which setting needs what. Ready again once daprd has it. daprd's features are read with its API token.
    /// </summary>
    [Fact]
    public async Task Run_retention_with_daprds_ActorStateTTL_feature_off_keeps_the_app_not_ready_and_the_log_says_why()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(
            cursor.Url, logs: logs, sidecarApiToken: "daprd-token-7",
            settings: new Dictionary<string, string?> { ["Handoff:RunRetention"] = "7.00:00:00", ["DAPR_API_TOKEN"] = "daprd-token-7" });
        var client = factory.CreateClient();

        factory.Sidecar.Options.ActorStateTtlEnabled = false;
        var off = await client.GetAsync("/readyz");
        factory.Sidecar.Options.ActorStateTtlEnabled = true;
        var on = await client.GetAsync("/readyz");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, off.StatusCode);
        Assert.Equal(HttpStatusCode.OK, on.StatusCode);
        var notReady = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "SidecarNotReady");
        Assert.Equal(LogLevel.Warning, notReady.Level);
        Assert.Contains("the ActorStateTTL feature is off, which Handoff:RunRetention needs", notReady.Message, StringComparison.Ordinal);
        Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "SidecarReadyAgain");
    }

    /// <summary>Without <c>Handoff:RunRetention</c> no save carries a TTL: daprd's ActorStateTTL feature is not needed.</summary>
    [Fact]
    public async Task Without_run_retention_daprds_ActorStateTTL_feature_is_not_needed()
    {
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url);
        var client = factory.CreateClient();

        factory.Sidecar.Options.ActorStateTtlEnabled = false;
        var ready = await client.GetAsync("/readyz");

        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
    }

    /// <summary>
    /// daprd's own health comes first: a sidecar that says it is not ready keeps the app out of traffic even though its
    /// metadata lists everything the app needs, and the app is ready again once daprd is.
    /// </summary>
    [Fact]
    public async Task A_sidecar_that_says_it_is_not_ready_keeps_the_app_out_of_traffic_whatever_its_metadata_lists()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, logs: logs);
        var client = factory.CreateClient();

        factory.Sidecar.Options.Ready = false;
        var notReady = await client.GetAsync("/readyz");
        factory.Sidecar.Options.Ready = true;
        var ready = await client.GetAsync("/readyz");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, notReady.StatusCode);
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        var yet = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "SidecarNotReadyYet");
        Assert.Equal("the Dapr sidecar is not healthy", yet.GetStructuredStateValue("Reason"));
        Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "SidecarReadyAgain");
    }

    /// <summary>
    /// A sidecar that has everything from the first probe on is said ready once, by start-up (SidecarReady): the probes
    /// add no line of their own ("ready again" is for a sidecar that was not).
    /// </summary>
    [Fact]
    public async Task A_sidecar_ready_from_the_first_probe_adds_no_line_to_the_one_start_up_wrote()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, logs: logs);
        var client = factory.CreateClient();

        var first = await client.GetAsync("/readyz");
        var second = await client.GetAsync("/readyz");

        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "SidecarReady");
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name is "SidecarReadyAgain" or "SidecarNotReady" or "SidecarNotReadyYet" or "SidecarBindingsMissing");
    }

    /// <summary>
    /// Every start waits a few seconds for daprd to register the actor type (it does once the app answers): that is
    /// information before the app was first ready, not a warning; once it has been ready, losing it is a warning.
    /// </summary>
    [Fact]
    public async Task Waiting_for_the_actor_type_at_start_is_information_and_losing_it_later_a_warning()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, logs: logs);
        var client = factory.CreateClient();
        var app = factory.Server.CreateHandler();

        factory.Sidecar.AppChannel = new RefusingAppChannel(); // daprd has not had the app's dapr/config yet
        var starting = await client.GetAsync("/readyz");
        factory.Sidecar.AppChannel = app;
        var ready = await client.GetAsync("/readyz");
        factory.Sidecar.AppChannel = new RefusingAppChannel();
        var lost = await client.GetAsync("/readyz");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, starting.StatusCode);
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, lost.StatusCode);
        var yet = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "SidecarNotReadyYet");
        Assert.Equal(LogLevel.Information, yet.Level);
        Assert.Contains(SidecarComponents.ActorTypeNotRegistered, yet.Message, StringComparison.Ordinal);
        Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "SidecarReadyAgain");
        Assert.Contains(SidecarComponents.ActorTypeNotRegistered, Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "SidecarNotReady").Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// A start may wait for daprd's health, then for the actor type: each is said once, both as information, since the app
    /// has not been ready yet (a probe that was not ready does not count as one that was).
    /// </summary>
    [Fact]
    public async Task A_start_waiting_first_for_the_sidecars_health_then_for_the_actor_type_says_both_as_information()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, logs: logs);
        var client = factory.CreateClient();
        var app = factory.Server.CreateHandler();

        factory.Sidecar.Options.Ready = false;
        var unhealthy = await client.GetAsync("/readyz");
        factory.Sidecar.Options.Ready = true;
        factory.Sidecar.AppChannel = new RefusingAppChannel();
        var unregistered = await client.GetAsync("/readyz");
        factory.Sidecar.AppChannel = app;
        var ready = await client.GetAsync("/readyz");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, unhealthy.StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, unregistered.StatusCode);
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        var waits = logs.GetSnapshot().Where(record => record.Id.Name == "SidecarNotReadyYet").ToList();
        Assert.Equal(2, waits.Count);
        Assert.All(waits, wait => Assert.Equal(LogLevel.Information, wait.Level));
        Assert.Equal("the Dapr sidecar is not healthy", waits[0].GetStructuredStateValue("Reason"));
        Assert.Contains(SidecarComponents.ActorTypeNotRegistered, waits[1].Message, StringComparison.Ordinal);
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "SidecarNotReady");
    }

    /// <summary>
    /// Only the actor type's registration is a start's wait: with a component missing as well, the app is not ready for a
    /// reason no wait ends, a warning from the first probe. Taking the wait for the actor type as a start's, whatever else
    /// is missing, said a misnamed pub/sub as information until the start-up wait was over.
    /// </summary>
    [Fact]
    public async Task A_missing_component_is_a_warning_from_the_start_even_while_the_actor_type_is_not_yet_registered()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(
            cursor.Url, logs: logs, settings: new Dictionary<string, string?> { ["Handoff:Dapr:PubSubName"] = "events" });
        factory.Sidecar.AppChannel = new RefusingAppChannel(); // daprd has not had the app's dapr/config yet

        var first = await factory.CreateClient().GetAsync("/readyz");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, first.StatusCode);
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "SidecarNotReadyYet");
        var notReady = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "SidecarNotReady");
        Assert.Equal(LogLevel.Warning, notReady.Level);
        Assert.Contains(SidecarComponents.ActorTypeNotRegistered, notReady.Message, StringComparison.Ordinal);
        Assert.Contains("no pub/sub component named events (Handoff:Dapr:PubSubName)", notReady.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// A pod that never gets ready is not left with information lines only: past the sidecar's start-up wait
    /// (<c>Handoff:Dapr:SidecarWaitTimeout</c>) the same reason is said again, as a warning, once.
    /// </summary>
    [Fact]
    public async Task Waiting_past_the_start_up_wait_is_said_again_as_a_warning_once()
    {
        var logs = new FakeLogCollector();
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        // Not the default (30 s): the wait is the setting's, not one of the check's own.
        var sidecarWait = TimeSpan.FromSeconds(20);
        await using var factory = await DaprServiceFactory.StartAsync(
            cursor.Url, time: time, logs: logs, settings: new Dictionary<string, string?> { ["Handoff:Dapr:SidecarWaitTimeout"] = sidecarWait.ToString() });
        var client = factory.CreateClient();
        factory.Sidecar.AppChannel = new RefusingAppChannel();

        await client.GetAsync("/readyz");
        time.Advance(sidecarWait + TimeSpan.FromSeconds(1));
        await client.GetAsync("/readyz");
        var still = await client.GetAsync("/readyz");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, still.StatusCode);
        var yet = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "SidecarNotReadyYet");
        var warned = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "SidecarNotReady");
        Assert.Equal(LogLevel.Warning, warned.Level);
        Assert.Equal(yet.GetStructuredStateValue("Reason"), warned.GetStructuredStateValue("Reason"));
    }

    [Fact]
    public async Task A_client_that_throws_reads_not_ready_with_a_fixed_reason_never_the_exception()
    {
        // A disposed client (as at shutdown) throws ObjectDisposedException, which is none of the failures a sidecar
        // call is expected to end in.
        var dapr = new DaprClientBuilder().UseHttpEndpoint("http://127.0.0.1:9").UseGrpcEndpoint("http://127.0.0.1:9").Build();
        dapr.Dispose();
        var logs = new FakeLogCollector();
        using var features = new SidecarFeatures(new ConfigurationBuilder().Build());
        var check = new SidecarReadinessCheck(
            dapr, features, Microsoft.Extensions.Options.Options.Create(new HandoffOptions()), TimeProvider.System,
            new FakeLogger<SidecarReadinessCheck>(logs));

        var result = await check.CheckHealthAsync(new HealthCheckContext());

        Assert.Equal(HealthStatus.Unhealthy, result.Status);
        Assert.Equal("the Dapr sidecar could not be asked", result.Description);
        Assert.Null(result.Exception);
        var line = Assert.Single(logs.GetSnapshot());
        Assert.Equal("SidecarNotReadyYet", line.Id.Name);
        Assert.Null(line.Exception);
    }

    /// <summary>
    /// A probe that goes away (its cancellation) while daprd is asked, for its health or for its metadata, has learnt
    /// nothing: the check ends as cancelled, with no verdict and no line. Read as "could not be asked" or "metadata could
    /// not be read" (catching the cancellation), every probe the health check service gives up on wrote a not-ready line
    /// and changed what the next verdict is compared with. The check's own look at the cancellation after a failed answer
    /// is not shown here: the Dapr client throws the cancellation itself first.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_probe_that_goes_away_while_daprd_is_asked_ends_cancelled_with_no_verdict_and_no_line(bool healthAnswers)
    {
        // daprd's health endpoint (HTTP) and its API (gRPC): the one asked last accepts the call and never answers.
        using var health = new TcpListener(IPAddress.Loopback, 0);
        using var api = new TcpListener(IPAddress.Loopback, 0);
        health.Start();
        api.Start();
        using var dapr = new DaprClientBuilder()
            .UseHttpEndpoint($"http://127.0.0.1:{((IPEndPoint)health.LocalEndpoint).Port}")
            .UseGrpcEndpoint($"http://127.0.0.1:{((IPEndPoint)api.LocalEndpoint).Port}")
            .Build();
        var logs = new FakeLogCollector();
        using var features = new SidecarFeatures(new ConfigurationBuilder().Build());
        var check = new SidecarReadinessCheck(
            dapr, features, Microsoft.Extensions.Options.Options.Create(new HandoffOptions()), TimeProvider.System,
            new FakeLogger<SidecarReadinessCheck>(logs));
        using var probe = new CancellationTokenSource();

        var checking = check.CheckHealthAsync(new HealthCheckContext(), probe.Token);
        using var healthCall = await health.AcceptTcpClientAsync().WaitAsync(TimeSpan.FromSeconds(30));
        if (healthAnswers)
        {
            var stream = healthCall.GetStream();
            var request = new byte[4096];
            var read = 0;
            while (!Encoding.ASCII.GetString(request, 0, read).Contains("\r\n\r\n", StringComparison.Ordinal))
            {
                read += await stream.ReadAsync(request.AsMemory(read));
            }

            await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"u8.ToArray());
            using var metadataCall = await api.AcceptTcpClientAsync().WaitAsync(TimeSpan.FromSeconds(30));
            await probe.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => checking.WaitAsync(TimeSpan.FromSeconds(30)));
        }
        else
        {
            await probe.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => checking.WaitAsync(TimeSpan.FromSeconds(30)));
        }

        Assert.Empty(logs.GetSnapshot());
    }

    [Fact]
    public void Each_missing_part_is_named_and_a_sidecar_with_all_of_them_lacks_nothing()
    {
        var options = new HandoffOptions();
        options.Integrations["42"] = new IntegrationOptions { Binding = "coding-agent-cursor" };
        options.Integrations["43"] = new IntegrationOptions { Binding = "coding-agent-copilot" };
        DaprComponentsMetadata Component(string name, string type, params string[] capabilities) => new(name, type, "v1", capabilities);
        var everything = new DaprMetadata(
            "handoff", [new DaprActorMetadata(HandoffRunActor.ActorTypeName, 0)], new Dictionary<string, string>(),
            [Component("statestore", "state.redis", "ETAG", "TRANSACTIONAL", "ACTOR"), Component("pubsub", "pubsub.redis"),
             Component("coding-agent-cursor", "bindings.http", "OUTPUT_BINDING"), Component("coding-agent-copilot", "bindings.http", "OUTPUT_BINDING")]);
        // A component of the right name but another kind is not the one the app calls; a store without ACTOR holds no actors.
        var lacking = new DaprMetadata(
            "handoff", [], new Dictionary<string, string>(),
            [Component("statestore", "state.sqlserver", "ETAG"), Component("pubsub", "bindings.http"), Component("coding-agent-cursor", "bindings.http")]);

        Assert.Empty(SidecarComponents.MissingForAll(everything, options));
        Assert.Empty(SidecarComponents.MissingBindings(everything, options));
        var missing = SidecarComponents.MissingForAll(lacking, options);
        Assert.Equal(3, missing.Count);
        Assert.StartsWith("no state store component that can hold actors", missing[0], StringComparison.Ordinal);
        Assert.Equal(SidecarComponents.ActorTypeNotRegistered, missing[1]);
        Assert.Equal("no pub/sub component named pubsub (Handoff:Dapr:PubSubName)", missing[2]);
        Assert.Equal(["coding-agent-copilot (Handoff:Integrations:43:Binding)"], SidecarComponents.MissingBindings(lacking, options));
    }

    /// <summary>
    /// daprd looks components and actor types up by their exact names: a name in another case, an actor type of another
    /// app, a component of another kind that has the right name or capability, is not what the app calls, and every call
    /// to it would fail. Each is said missing.
    /// </summary>
    [Fact]
    public void A_part_named_in_another_case_or_of_another_kind_is_missing()
    {
        var options = new HandoffOptions();
        options.Integrations["42"] = new IntegrationOptions { Binding = "coding-agent-cursor" };
        DaprComponentsMetadata Component(string name, string type, params string[] capabilities) => new(name, type, "v1", capabilities);
        var lacking = new DaprMetadata(
            "handoff", [new DaprActorMetadata("handoffrunactor", 0), new DaprActorMetadata("OrderActor", 3)], new Dictionary<string, string>(),
            [Component("actors", "bindings.http", "ACTOR"), Component("PubSub", "pubsub.redis"), Component("coding-agent-cursor", "state.redis", "ETAG", "TRANSACTIONAL", "ACTOR")]);

        var missing = SidecarComponents.MissingForAll(lacking, options);

        // The one state store holds actors, but it is named as the binding: only the binding is missing of those two.
        Assert.Equal(
            [SidecarComponents.ActorTypeNotRegistered, "no pub/sub component named pubsub (Handoff:Dapr:PubSubName)"],
            missing);
        Assert.Equal(["coding-agent-cursor (Handoff:Integrations:42:Binding)"], SidecarComponents.MissingBindings(lacking, options));
        var noActorStore = new DaprMetadata(
            "handoff", [new DaprActorMetadata(HandoffRunActor.ActorTypeName, 0)], new Dictionary<string, string>(),
            [Component("actors", "bindings.http", "ACTOR"), Component("pubsub", "pubsub.redis")]);
        Assert.StartsWith("no state store component that can hold actors", Assert.Single(SidecarComponents.MissingForAll(noActorStore, options)), StringComparison.Ordinal);
    }

    /// <summary>
    /// With <c>Handoff:RunRetention</c> set, daprd's features decide readiness only when they are known: features that
    /// could not be read (null) conclude nothing, while a feature daprd lists in another case is not the one it turns on
    /// (its Configuration's names are compared exactly), so it is said missing.
    /// </summary>
    [Fact]
    public void Run_retention_needs_ActorStateTTL_by_its_exact_name_and_unknown_features_conclude_nothing()
    {
        var options = new HandoffOptions { RunRetention = TimeSpan.FromDays(7) };
        var everything = new DaprMetadata(
            "handoff", [new DaprActorMetadata(HandoffRunActor.ActorTypeName, 0)], new Dictionary<string, string>(),
            [new("statestore", "state.redis", "v1", ["ETAG", "TRANSACTIONAL", "ACTOR"]), new("pubsub", "pubsub.redis", "v1", [])]);

        Assert.Empty(SidecarComponents.MissingForAll(everything, options, enabledFeatures: null));
        Assert.Empty(SidecarComponents.MissingForAll(everything, options, [SidecarFeatures.ActorStateTtl]));
        Assert.StartsWith("the ActorStateTTL feature is off", Assert.Single(SidecarComponents.MissingForAll(everything, options, ["actorstatettl"])), StringComparison.Ordinal);
    }

    /// <summary>
    /// Stores take a run's TTL off in different ways (<see cref="ActorStateTtl"/>): the actor state store's type is
    /// that of the store named <c>Handoff:Dapr:StateStoreName</c> that can hold actors, else the one type of all that
    /// can; with several types and none so named, retention cannot know it, and readiness says so. Without retention,
    /// it need not.
    /// </summary>
    [Fact]
    public void Actor_state_stores_type_is_the_named_ones_or_the_one_type_and_retention_needs_it_known()
    {
        DaprComponentsMetadata Store(string name, string type, params string[] capabilities) => new(name, type, "v1", capabilities);
        DaprMetadata With(params DaprComponentsMetadata[] stores) => new(
            "handoff", [new DaprActorMetadata(HandoffRunActor.ActorTypeName, 0)], new Dictionary<string, string>(),
            [.. stores, Store("pubsub", "pubsub.redis")]);
        var named = With(Store("cache", "state.redis", "ETAG", "TRANSACTIONAL", "ACTOR"), Store("statestore", "state.sqlserver", "ETAG", "TRANSACTIONAL", "ACTOR"));
        var oneType = With(Store("a", "state.mongodb", "ETAG", "TRANSACTIONAL", "ACTOR"), Store("b", "state.mongodb", "ETAG", "TRANSACTIONAL", "ACTOR"));
        // "statestore" holds no actors here (no transactions): the two stores that can are of two types.
        var ambiguous = With(Store("statestore", "state.redis", "ETAG"), Store("a", "state.redis", "ETAG", "TRANSACTIONAL", "ACTOR"),
            Store("b", "state.postgresql", "ETAG", "TRANSACTIONAL", "ACTOR"));
        var dapr = new DaprOptions();

        Assert.Equal("state.sqlserver", SidecarComponents.ActorStateStoreType(named, dapr));
        Assert.Equal("state.mongodb", SidecarComponents.ActorStateStoreType(oneType, dapr));
        Assert.Null(SidecarComponents.ActorStateStoreType(ambiguous, dapr));
        Assert.Equal("state.postgresql", SidecarComponents.ActorStateStoreType(ambiguous, new DaprOptions { StateStoreName = "b" }));
        var retention = new HandoffOptions { RunRetention = TimeSpan.FromDays(7) };
        Assert.Contains("Handoff:Dapr:StateStoreName", Assert.Single(SidecarComponents.MissingForAll(ambiguous, retention)), StringComparison.Ordinal);
        Assert.Empty(SidecarComponents.MissingForAll(named, retention));
        Assert.Empty(SidecarComponents.MissingForAll(ambiguous, new HandoffOptions()));
    }

    /// <summary>
    /// Only run retention needs daprd's features: without it a probe does not ask daprd for them a second time (its
    /// metadata over HTTP, besides the gRPC metadata every probe reads). With it, the features are asked for, and read.
    /// </summary>
    [Theory]
    [InlineData(false, 0)]
    [InlineData(true, 1)]
    public async Task A_probe_asks_daprd_for_its_features_only_with_run_retention(bool retention, int featureCalls)
    {
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url);
        using var daprdHttp = WireMock.Server.WireMockServer.Start(new WireMock.Settings.WireMockServerSettings { Urls = ["http://127.0.0.1:0"] });
        daprdHttp.Given(WireMock.RequestBuilders.Request.Create().WithPath("/v1.0/metadata").UsingGet())
            .RespondWith(WireMock.ResponseBuilders.Response.Create().WithStatusCode(200).WithHeader("Content-Type", "application/json")
                .WithBody($$"""{"id":"handoff","enabledFeatures":["{{SidecarFeatures.ActorStateTtl}}"]}"""));
        using var features = new SidecarFeatures(new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["DAPR_HTTP_ENDPOINT"] = daprdHttp.Url }).Build());
        var check = new SidecarReadinessCheck(
            factory.Services.GetRequiredService<DaprClient>(), features,
            Microsoft.Extensions.Options.Options.Create(new HandoffOptions { RunRetention = retention ? TimeSpan.FromDays(7) : null }), TimeProvider.System,
            new FakeLogger<SidecarReadinessCheck>(new FakeLogCollector()));

        var result = await check.CheckHealthAsync(new HealthCheckContext());

        Assert.Equal(HealthStatus.Healthy, result.Status);
        Assert.Equal(featureCalls, daprdHttp.LogEntries.Count());
    }

    public void Dispose() => cursor.Dispose();
}
