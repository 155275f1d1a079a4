using System.Net;
using System.Text;
using System.Text.Json.Nodes;

namespace HandoffDapr.FakeSidecar.Tests;

public sealed class GrpcAndHttpApiTests : SidecarTest
{
    /// <summary>With daprd's ActorStateTTL feature on (as components/config.yaml has it), so the TTL tests here can save one.</summary>
    protected override FakeSidecarOptions Options => new() { ActorStateTtlEnabled = true };

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task State_store_save_and_get_round_trip_with_etags(bool inMemory)
    {
        using var dapr = Clients.Dapr(Sidecar, inMemory);

        await dapr.SaveStateAsync("statestore", "k", new { n = 1 });
        var (value, etag) = await dapr.GetStateAndETagAsync<Dictionary<string, int>>("statestore", "k");

        Assert.Equal(1, value["n"]);
        Assert.True(await dapr.TrySaveStateAsync("statestore", "k", new { n = 2 }, etag));
        Assert.False(await dapr.TrySaveStateAsync("statestore", "k", new { n = 3 }, etag)); // stale etag → Aborted
        Assert.Equal("""{"n":2}""", Encoding.UTF8.GetString(Sidecar.GetStateStoreValue("statestore", "k")!));
        Assert.Null(await dapr.GetStateAsync<Dictionary<string, int>>("statestore", "missing"));
    }

    [Fact]
    public async Task Metadata_lists_app_id_components_and_hosted_actor_types()
    {
        Sidecar.AddHttpBinding("cursor", new Uri("http://127.0.0.1:9"));
        using var dapr = Clients.Dapr(Sidecar);

        var metadata = await dapr.GetMetadataAsync();

        Assert.Equal("handoff", metadata.Id);
        Assert.Contains(metadata.Components, c => c.Name == "cursor" && c.Type == "bindings.http");
        Assert.Contains(metadata.Actors, a => a.Type == "TestActor");
        // pkg/runtime/runtime.go getComponentsCapabilitesMap: a state store with ETag and transactions is also ACTOR.
        var store = Assert.Single(metadata.Components, c => c.Name == "statestore");
        Assert.Subset(store.Capabilities.ToHashSet(), new HashSet<string> { "ETAG", "TRANSACTIONAL", "ACTOR" });
        Assert.Equal(["OUTPUT_BINDING"], Assert.Single(metadata.Components, c => c.Name == "cursor").Capabilities);

        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };
        var json = await http.GetStringAsync("v1.0/metadata");
        Assert.Contains("\"TestActor\"", json);
    }

    /// <summary>
    /// daprd lists the features its Configuration turns on in both metadata answers (pkg/api/universal/metadata.go
    /// EnabledFeatures); the HTTP one leaves the field out when there is none (pkg/api/http/metadata.go, omitempty).
    /// </summary>
    [Fact]
    public async Task Metadata_lists_ActorStateTTL_as_an_enabled_feature_only_while_it_is_on()
    {
        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };
        using var channel = Grpc.Net.Client.GrpcChannel.ForAddress(Sidecar.GrpcEndpoint);
        var grpc = new Dapr.Client.Autogen.Grpc.v1.Dapr.DaprClient(channel);

        Sidecar.Options.ActorStateTtlEnabled = true;
        var onHttp = JsonNode.Parse(await http.GetStringAsync("v1.0/metadata"))!;
        var onGrpc = await grpc.GetMetadataAsync(new Dapr.Client.Autogen.Grpc.v1.GetMetadataRequest());
        Sidecar.Options.ActorStateTtlEnabled = false;
        var offHttp = JsonNode.Parse(await http.GetStringAsync("v1.0/metadata"))!;
        var offGrpc = await grpc.GetMetadataAsync(new Dapr.Client.Autogen.Grpc.v1.GetMetadataRequest());

        Assert.Equal(["ActorStateTTL"], onHttp["enabledFeatures"]!.AsArray().Select(f => f!.GetValue<string>()));
        Assert.Equal(["ActorStateTTL"], onGrpc.EnabledFeatures);
        Assert.False(offHttp.AsObject().ContainsKey("enabledFeatures"));
        Assert.Empty(offGrpc.EnabledFeatures);
    }

    [Fact]
    public async Task Health_checks_answer_204_and_double_slash_paths_are_normalised()
    {
        using var dapr = Clients.Dapr(Sidecar);
        Assert.True(await dapr.CheckHealthAsync());
        // A liveness bound, not a timing: a loaded machine can take 2 s over a call or two.
        using var bound = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await dapr.WaitForSidecarAsync(bound.Token);

        using var http = new HttpClient();
        using var response = await http.GetAsync(Sidecar.HttpEndpoint + "//v1.0/healthz/outbound");
        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
    }

    [Fact]
    public async Task A_sidecar_not_ready_answers_its_health_check_500_and_serves_the_rest()
    {
        using var dapr = Clients.Dapr(Sidecar);
        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };

        Sidecar.Options.Ready = false;
        var notReady = await dapr.CheckHealthAsync();
        using var health = await http.GetAsync("v1.0/healthz");
        using var outbound = await http.GetAsync("v1.0/healthz/outbound");
        var metadata = await dapr.GetMetadataAsync();
        Sidecar.Options.Ready = true;
        var ready = await dapr.CheckHealthAsync();

        Assert.False(notReady);
        Assert.Equal(HttpStatusCode.InternalServerError, health.StatusCode);
        Assert.Equal("""{"errorCode":"ERR_HEALTH_NOT_READY","message":"dapr is not ready"}""", await health.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.NoContent, outbound.StatusCode); // its outbound side is judged on its own
        Assert.Equal("handoff", metadata.Id);
        Assert.True(ready);
    }

    [Fact]
    public async Task Service_invocation_of_the_app_reaches_it_through_the_sidecar()
    {
        using var dapr = Clients.Dapr(Sidecar);

        using var http = dapr.CreateInvokableHttpClient("handoff");
        using var response = await http.PostAsync("/hello", null);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("hi from app", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Unimplemented_grpc_method_is_status_12()
    {
        using var dapr = Clients.Dapr(Sidecar, inMemory: true);

        var ex = await Assert.ThrowsAnyAsync<Exception>(() => dapr.GetSecretAsync("vault", "key"));

        var rpc = ex as Grpc.Core.RpcException ?? Assert.IsType<Grpc.Core.RpcException>(ex.InnerException);
        Assert.Equal(Grpc.Core.StatusCode.Unimplemented, rpc.StatusCode);
    }

    [Fact]
    public async Task Actor_state_is_stored_as_daprd_re_marshals_it_and_ttl_is_not_reported_as_with_redis()
    {
        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };
        var ops = """[{"operation":"upsert","request":{"key":"big","value":{"z":1,"id":12345678901234567890}}},""" +
                  """{"operation":"upsert","request":{"key":"short","value":"x","metadata":{"ttlInSeconds":"60"}}}]""";
        await ActivateAsync(App, "s");
        using var saved = await http.PutAsync("v1.0/actors/TestActor/s/state", new StringContent(ops));
        Assert.Equal(HttpStatusCode.NoContent, saved.StatusCode);

        Assert.Equal("""{"id":12345678901234567000,"z":1}""", await http.GetStringAsync("v1.0/actors/TestActor/s/state/big"));
        using var shortLived = await http.GetAsync("v1.0/actors/TestActor/s/state/short");
        Assert.Equal(HttpStatusCode.OK, shortLived.StatusCode);
        Assert.False(shortLived.Headers.Contains("Metadata.ttlExpireTime")); // state.redis returns no GetResponse metadata
        using var missing = await http.GetAsync("v1.0/actors/TestActor/s/state/none");
        Assert.Equal(HttpStatusCode.NoContent, missing.StatusCode);
    }

    [Fact]
    public async Task Actor_state_ttl_of_zero_persists_the_key_and_an_empty_ttl_keeps_its_expiry_as_redis_does()
    {
        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };
        await ActivateAsync(App, "z");
        using var first = await http.PutAsync("v1.0/actors/TestActor/z/state", new StringContent(
            """[{"operation":"upsert","request":{"key":"zero","value":"a","metadata":{"ttlInSeconds":"60"}}},""" +
            """{"operation":"upsert","request":{"key":"empty","value":"b","metadata":{"ttlInSeconds":"60"}}}]"""));
        Assert.Equal(HttpStatusCode.NoContent, first.StatusCode);
        using var second = await http.PutAsync("v1.0/actors/TestActor/z/state", new StringContent(
            """[{"operation":"upsert","request":{"key":"zero","value":"a2","metadata":{"ttlInSeconds":"0"}}},""" +
            """{"operation":"upsert","request":{"key":"empty","value":"b2","metadata":{"ttlInSeconds":""}}}]"""));
        Assert.Equal(HttpStatusCode.NoContent, second.StatusCode);

        var expiries = Sidecar.GetActorStateExpiries("TestActor", "z");
        Assert.Null(expiries["zero"]); // PERSIST for ttl <= 0, not a key that expires at once
        Assert.NotNull(expiries["empty"]); // parseTTL reads "" as no TTL: the key keeps the one it had
        Assert.Equal("\"a2\"", await http.GetStringAsync("v1.0/actors/TestActor/z/state/zero"));
    }

    [Fact]
    public async Task Actor_state_ttl_of_another_store_type_counts_from_now_whatever_its_sign_and_a_write_without_clears_it()
    {
        Sidecar.Options.StateStoreType = "state.sqlserver";
        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };
        await ActivateAsync(App, "q");
        using var first = await http.PutAsync("v1.0/actors/TestActor/q/state", new StringContent(
            """[{"operation":"upsert","request":{"key":"minus","value":"a","metadata":{"ttlInSeconds":"-1"}}},""" +
            """{"operation":"upsert","request":{"key":"plain","value":"b","metadata":{"ttlInSeconds":"60"}}}]"""));
        using var second = await http.PutAsync("v1.0/actors/TestActor/q/state", new StringContent(
            """[{"operation":"upsert","request":{"key":"plain","value":"b2"}}]"""));

        Assert.Equal(HttpStatusCode.NoContent, first.StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, second.StatusCode);
        var expiries = Sidecar.GetActorStateExpiries("TestActor", "q");
        Assert.DoesNotContain("minus", expiries.Keys); // "-1": expired a second ago, as SQL Server reads it
        Assert.Null(expiries["plain"]); // a write without a TTL stores none
        var metadata = JsonNode.Parse(await http.GetStringAsync("v1.0/metadata"))!;
        Assert.Contains(metadata["components"]!.AsArray(), c => c!["name"]!.GetValue<string>() == "statestore"
            && c["type"]!.GetValue<string>() == "state.sqlserver");
    }

    [Fact]
    public async Task Actor_state_ttl_below_minus_one_is_refused_whole_by_a_store_that_parses_it_as_sql_stores_do()
    {
        Sidecar.Options.StateStoreRefusesTtlBelowMinusOne = true;
        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };
        await ActivateAsync(App, "p");
        using var refused = await http.PutAsync("v1.0/actors/TestActor/p/state", new StringContent(
            """[{"operation":"upsert","request":{"key":"kept","value":"a","metadata":{"ttlInSeconds":"-1"}}},""" +
            """{"operation":"upsert","request":{"key":"aged","value":"b","metadata":{"ttlInSeconds":"-2"}}}]"""));
        using var accepted = await http.PutAsync("v1.0/actors/TestActor/p/state", new StringContent(
            """[{"operation":"upsert","request":{"key":"kept","value":"a","metadata":{"ttlInSeconds":"-1"}}}]"""));

        Assert.Equal(HttpStatusCode.InternalServerError, refused.StatusCode);
        Assert.Contains("must be -1 or greater", await refused.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.NoContent, accepted.StatusCode);
        var keys = Sidecar.GetActorStateExpiries("TestActor", "p").Keys;
        Assert.Contains("kept", keys);
        Assert.DoesNotContain("aged", keys); // nothing of the refused transaction saved
    }

    [Fact]
    public async Task Unsupported_state_operation_is_a_transaction_error()
    {
        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };
        await ActivateAsync(App, "s");
        using var response = await http.PutAsync("v1.0/actors/TestActor/s/state", new StringContent("""[{"operation":"merge","request":{"key":"k"}}]"""));

        Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
        Assert.Equal("""{"errorCode":"ERR_ACTOR_STATE_TRANSACTION_SAVE","message":"error saving actor transaction state: operation type merge not supported"}""",
            await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Actor_state_save_for_an_id_not_active_on_the_sidecar_is_refused_as_instance_missing()
    {
        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };
        const string Ops = """[{"operation":"upsert","request":{"key":"k","value":1}}]""";
        const string Missing = """{"errorCode":"ERR_ACTOR_INSTANCE_MISSING","message":"actor instance is missing"}""";

        using (var never = await http.PutAsync("v1.0/actors/TestActor/idle/state", new StringContent(Ops)))
        {
            Assert.Equal(HttpStatusCode.BadRequest, never.StatusCode);
            Assert.Equal(Missing, await never.Content.ReadAsStringAsync());
        }

        await ActivateAsync(App, "idle");
        using (var active = await http.PutAsync("v1.0/actors/TestActor/idle/state", new StringContent(Ops)))
        {
            Assert.Equal(HttpStatusCode.NoContent, active.StatusCode);
        }

        (await Sidecar.DeactivateActorAsync("TestActor", "idle")).Dispose();
        using (var deactivated = await http.PutAsync("v1.0/actors/TestActor/idle/state", new StringContent(Ops)))
        {
            Assert.Equal(HttpStatusCode.BadRequest, deactivated.StatusCode);
        }

        Assert.Equal(1, Sidecar.GetActorState("TestActor", "idle", "k")!.Value.GetInt32());
    }

    /// <summary>daprd keeps state writes to the actors it has activated: a call through it activates one.</summary>
    internal static Task<int> ActivateAsync(TestApp app, string id) =>
        app.ProxyFactory.CreateActorProxy<ITestActor>(new Dapr.Actors.ActorId(id), "TestActor").GetCountAsync();
}

/// <summary>A store that reports a key's expiry on reads (not state.redis): the header the SDK reads is sent.</summary>
public sealed class TtlReportingStateStoreTests : SidecarTest
{
    protected override FakeSidecarOptions Options => new() { StateStoreReportsTtlExpireTime = true, ActorStateTtlEnabled = true };

    [Fact]
    public async Task Actor_state_ttl_is_reported_when_the_store_reports_it()
    {
        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };
        await GrpcAndHttpApiTests.ActivateAsync(App, "s");
        using var saved = await http.PutAsync("v1.0/actors/TestActor/s/state", new StringContent(
            """[{"operation":"upsert","request":{"key":"short","value":"x","metadata":{"ttlInSeconds":"60"}}}]"""));
        Assert.Equal(HttpStatusCode.NoContent, saved.StatusCode);

        using var shortLived = await http.GetAsync("v1.0/actors/TestActor/s/state/short");
        Assert.True(shortLived.Headers.Contains("Metadata.ttlExpireTime"));
    }
}

/// <summary>
/// daprd without the ActorStateTTL preview feature (a plain <c>dapr run</c>): an actor state transaction naming
/// <c>ttlInSeconds</c> is refused whole (pkg/actors/api/transactional.go), whatever its value; one without it is saved.
/// </summary>
public sealed class ActorStateTtlFeatureOffTests : SidecarTest
{
    [Theory]
    [InlineData("60")]
    [InlineData("-1")]
    [InlineData("")]
    public async Task Actor_state_with_a_ttl_is_refused_without_the_feature_and_nothing_is_saved(string ttl)
    {
        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };
        await GrpcAndHttpApiTests.ActivateAsync(App, "t");
        using var refused = await http.PutAsync("v1.0/actors/TestActor/t/state", new StringContent(
            """[{"operation":"upsert","request":{"key":"plain","value":1}},""" +
            $$$$"""{"operation":"upsert","request":{"key":"short","value":2,"metadata":{"ttlInSeconds":"{{{{ttl}}}}"}}}]"""));

        Assert.Equal(HttpStatusCode.InternalServerError, refused.StatusCode);
        Assert.Equal(
            """{"errorCode":"ERR_ACTOR_STATE_TRANSACTION_SAVE","message":"error saving actor transaction state: ttlInSeconds is not supported without the \"ActorStateTTL\" feature enabled"}""",
            await refused.Content.ReadAsStringAsync());
        Assert.Null(Sidecar.GetActorState("TestActor", "t", "plain"));

        using var saved = await http.PutAsync("v1.0/actors/TestActor/t/state", new StringContent(
            """[{"operation":"upsert","request":{"key":"plain","value":1}}]"""));
        Assert.Equal(HttpStatusCode.NoContent, saved.StatusCode);
    }
}
