using System.Net;
using System.Text;
using System.Text.Json;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Serialization;
using HandoffDapr.FakeSidecar;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Extensions;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// What reaches the actors through a sidecar from elsewhere than this app (any app may call an actor type through its
/// own sidecar), and state the store holds in a shape this app did not write.
/// </summary>
public sealed class ActorBoundaryTests : IDisposable
{
    private const string Actor = HandoffRunActor.ActorTypeName;
    private readonly FakeCursor cursor = new();

    [Theory]
    [InlineData("007")]
    [InlineData("+7")]
    [InlineData("abc")]
    public async Task An_actor_id_that_is_not_a_runs_canonical_id_owns_nothing(string alias)
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, time: time, logs: logs);
        Assert.Equal(HttpStatusCode.Accepted, (await factory.CreateSidecarClient().PostJsonAsync("/runs/7/handoff", Payloads.Trigger(Payloads.Run(7, ["acme/shop"], automation: false)))).StatusCode);
        var trigger = Payloads.Trigger();
        trigger["snapshot"] = Payloads.Run(7, ["acme/shop"], automation: false);
        trigger.Remove("run");
        using var sidecar = new HttpClient { BaseAddress = factory.Sidecar.HttpEndpoint };

        var triggered = await sidecar.PutAsync($"/v1.0/actors/{Actor}/{Uri.EscapeDataString(alias)}/method/TriggerAsync", new StringContent(trigger.ToJsonString(), Encoding.UTF8, "application/json"));
        var accepted = await sidecar.PutAsync($"/v1.0/actors/{Actor}/{Uri.EscapeDataString(alias)}/method/AcceptCompletedRunAsync", new StringContent(Payloads.Run(7, ["acme/web"]).ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.True(triggered.IsSuccessStatusCode, $"TriggerAsync: {(int)triggered.StatusCode}");
        Assert.True(accepted.IsSuccessStatusCode, $"AcceptCompletedRunAsync: {(int)accepted.StatusCode}");
        // The calls that record what happened outside a turn answer as for a run the actor does not know, as the two
        // above do: they failed the turn, a 500 and an error logged as the store's fault.
        var now = time.GetUtcNow();
        var round = new LaunchRound(7, new RunSnapshot(7), now, [], []);
        var recordings = new (string Method, string Body)[]
        {
            ("ApplyAgentReportAsync", JsonSerializer.Serialize(new AgentReport(1, new ProviderAgent("bc-1", ProviderAgentStatus.Running)), HandoffJsonContext.Default.AgentReport)),
            ("RecordAgentCommandAsync", JsonSerializer.Serialize(new AgentCommandSent(7, "bc-1", Stop: true), HandoffJsonContext.Default.AgentCommandSent)),
            ("CompleteLaunchRoundAsync", JsonSerializer.Serialize(new LaunchRoundAnswers(round, []), HandoffJsonContext.Default.LaunchRoundAnswers)),
            ("CompletePollAsync", JsonSerializer.Serialize(new PollAnswers(new PollRound(7, now, now.AddMinutes(1), []), []), HandoffJsonContext.Default.PollAnswers)),
        };
        foreach (var (method, body) in recordings)
        {
            var answer = await sidecar.PutAsync($"/v1.0/actors/{Actor}/{Uri.EscapeDataString(alias)}/method/{method}", new StringContent(body, Encoding.UTF8, "application/json"));
            Assert.True(answer.IsSuccessStatusCode, $"{method}: {(int)answer.StatusCode}");
        }

        time.Advance(TimeSpan.FromMinutes(3));
        await factory.Sidecar.FireDueRemindersAsync(time.GetUtcNow());

        // A second owner of run 7 would keep state and a reminder of its own, and launch the repository again.
        Assert.Empty(factory.Sidecar.GetActorStateKeys(Actor, alias));
        Assert.DoesNotContain(factory.Sidecar.Reminders, reminder => reminder.ActorId == alias);
        Assert.Equal(1, cursor.LaunchRequests);
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "ActorTurnFailed");
    }

    /// <summary>
    /// An earlier release could register a reminder for an actor id that names no run ("007"). Kept, a periodic one would
    /// fire there for ever: its firing drops it, and runs nothing.
    /// </summary>
    [Fact]
    public async Task A_reminder_left_on_an_actor_id_that_names_no_run_is_dropped_at_its_firing_not_fired_for_ever()
    {
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url);
        using var sidecar = new HttpClient { BaseAddress = factory.Sidecar.HttpEndpoint };
        var registered = await sidecar.PostAsync(
            $"/v1.0/actors/{Actor}/007/reminders/{HandoffRunActor.WakeReminder}",
            new StringContent("""{"dueTime":"0s","period":"1m"}""", Encoding.UTF8, "application/json"));
        Assert.True(registered.IsSuccessStatusCode, $"registration: {(int)registered.StatusCode}");

        var fired = await factory.Sidecar.FireReminderAsync(Actor, "007", HandoffRunActor.WakeReminder);

        Assert.Equal(HttpStatusCode.OK, fired.StatusCode);
        Assert.DoesNotContain(factory.Sidecar.Reminders, reminder => reminder.ActorId == "007");
        Assert.Empty(factory.Sidecar.GetActorStateKeys(Actor, "007"));
        Assert.Equal(0, cursor.LaunchRequests);
    }

    /// <summary>
    /// Any app may register a reminder on this actor type through its own sidecar, named as it likes: the name, logged when
    /// the reminder fires, must not forge lines in the plain-text console (Dapr mode under <c>dotnet run</c>) nor be kilobytes long.
    /// </summary>
    [Fact]
    public async Task An_unknown_reminders_name_is_logged_bounded_and_without_control_characters()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, logs: logs);
        var client = factory.CreateSidecarClient();

        var fired = await client.PutAsync(
            $"/actors/{Actor}/78/method/remind/x%0D%0A{{\"LogLevel\":\"Critical\"}}%1B[2J{new string('y', 3000)}", new StringContent("{}", Encoding.UTF8, "application/json"));

        Assert.Equal(HttpStatusCode.OK, fired.StatusCode);
        var logged = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "UnknownReminder");
        var name = logged.StructuredState!.Single(field => field.Key == "ReminderName").Value!;
        Assert.DoesNotContain(name, char.IsControl);
        Assert.StartsWith("x??{", name, StringComparison.Ordinal);
        Assert.InRange(name.Length, 1, 200);
        Assert.DoesNotContain(logged.Message, char.IsControl);
    }

    [Theory]
    [InlineData(HandoffRunActor.TimelineKey)]
    [InlineData(HandoffRunActor.PollKey)]
    public async Task A_part_that_is_only_history_or_schedule_stored_as_null_reads_as_empty_not_as_a_failure_every_retry_meets(string key)
    {
        // Launches, agents or a snapshot stored as null are refused instead (DamagedActorStateTests): read as empty they
        // would start the run over.
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url);
        var client = factory.CreateSidecarClient();
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/500/handoff", Payloads.Trigger(Payloads.Run(500, ["acme/shop"], automation: false)))).StatusCode);
        factory.Sidecar.SetActorState(Actor, "500", key, null);
        await factory.Sidecar.DeactivateActorAsync(Actor, "500");

        var read = await client.GetAsync("/runs/500/handoff");
        var delivered = await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", Payloads.Run(500, ["acme/shop"]));

        Assert.Equal(HttpStatusCode.OK, read.StatusCode);
        Assert.Equal(DeliveryOutcome.Success, delivered.Outcome);
    }

    [Fact]
    public async Task A_turn_that_fails_answers_its_caller_without_the_reason()
    {
        const string StoreError = "redis: connection to redis-master.prod.svc:6379 refused (NOAUTH)";
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url);
        var answers = new AnswerCapture(factory.Server.CreateHandler());
        factory.Sidecar.AppChannel = answers;
        var client = factory.CreateSidecarClient();

        HttpResponseMessage read;
        using (factory.Sidecar.FailActorStateOperations(call => call.ActorId == "42", StoreError))
        {
            read = await client.GetAsync("/runs/42/handoff");
        }

        Assert.Equal(HttpStatusCode.ServiceUnavailable, read.StatusCode);
        var actorAnswers = answers.Seen.Where(seen => seen.Path.StartsWith("/actors/", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(actorAnswers);
        // The SDK puts the exception in the answer's body and, base64 within XML, in a header: both are searched.
        Assert.All(actorAnswers, seen => Assert.DoesNotContain("redis", seen.Text, StringComparison.OrdinalIgnoreCase));
        // The failed turn reaches the app's proxy as the SDK writes it, with its own fixed text only.
        Assert.Contains(actorAnswers, seen => seen.Text.Contains(typeof(ActorTurnFailedException).FullName!, StringComparison.Ordinal)
            && seen.Text.Contains("The run's turn failed.", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/TriggerAsync", "{", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/TriggerAsync", "[1]", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/AcceptCompletedRunAsync", "{\"run_id\":\"x\"}", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/remind/wake", "{", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/TriggerAsync", "null", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/AcceptCompletedRunAsync", "null", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/ApplyAgentReportAsync", "null", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/RecordAgentCommandAsync", "null", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/CompleteLaunchRoundAsync", "null", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/CompletePollAsync", "null", 400, "invalid-body")]
    // An object without the members the parameter requires, or with null where its type says never: the SDK read the
    // missing ones as null (or 0), and the engine met them as a NullReferenceException, a failed turn logged as the store's.
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/ApplyAgentReportAsync", "{}", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/ApplyAgentReportAsync", "{\"integration_id\":1,\"agent\":null}", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/ApplyAgentReportAsync", "{\"integration_id\":1,\"agent\":{\"id\":null,\"status\":\"running\"}}", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/RecordAgentCommandAsync", "{}", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/RecordAgentCommandAsync", "{\"run_id\":77,\"agent_id\":null,\"stop\":true}", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/CompleteLaunchRoundAsync", "{}", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/CompleteLaunchRoundAsync", "{\"round\":null,\"attempts\":[]}", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/CompletePollAsync", "{}", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/CompletePollAsync", "{\"round\":{\"run_id\":77,\"started_at\":\"2026-01-01T00:00:00Z\",\"lease_until\":\"2026-01-01T00:01:00Z\",\"agents\":[]},\"reports\":null}", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/CompletePollAsync", "{\"round\":{\"run_id\":77,\"started_at\":\"2026-01-01T00:00:00Z\",\"lease_until\":\"2026-01-01T00:01:00Z\",\"agents\":[null]},\"reports\":[null]}", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/TriggerAsync", "{}", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/AcceptCompletedRunAsync", "{}", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/NoSuchMethod", "{}", 404, "not-found")]
    [InlineData("PUT", "/actors/NoSuchActor/77/method/GetStateAsync", "{}", 404, "not-found")]
    [InlineData("DELETE", "/actors/NoSuchActor/77", null, 404, "not-found")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/remind/wake", "null", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/remind/wake", "[]", 400, "invalid-body")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/remind/wake", "", 400, "invalid-body")]
    // The app registers no timers: the SDK's timer route would run whatever public method the body names, and throw
    // (a 500) for a body without one.
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/timer/t1", "{}", 404, "not-found")]
    [InlineData("PUT", "/actors/HandoffRunActor/77/method/timer/t1", "{\"callback\":\"GetStateAsync\"}", 404, "not-found")]
    public async Task An_actor_call_the_app_cannot_take_is_a_4xx_problem_not_a_500(string method, string path, string? body, int status, string type)
    {
        // Any app may call an actor type through its own sidecar, and daprd relays the call as it came: a body that is not
        // JSON of the method's parameter, or a method or actor type this app does not have, is the caller's mistake. The
        // SDK let each escape as an exception: a 500, and an error with a stack trace in the log. A body of JSON null is
        // read as a null argument, which the actor's methods met as a NullReferenceException (a 500, or a failed turn).
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, logs: logs);
        var request = new HttpRequestMessage(new HttpMethod(method), path);
        if (body is not null)
        {
            request.Content = new StringContent(body, Encoding.UTF8, "application/json");
        }

        var response = await factory.CreateSidecarClient().SendAsync(request);

        Assert.Equal(status, (int)response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal($"https://handoff-dapr.dev/problems/{type}", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
        Assert.Equal(0, cursor.LaunchRequests);
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "ActorTurnFailed");
    }

    /// <summary>
    /// The actor routes read their body themselves, up to six times Handoff:MaxRequestBodyBytes (and a megabyte): a body one
    /// byte over is a 413 problem before the SDK or an actor sees it, whatever limit the server enforces (the test server
    /// enforces none). Reading with no limit here passed every test; a reminder's call ending without an answer when its
    /// body could not be read (an empty 200, as if the reminder had run) passed them too.
    /// </summary>
    [Theory]
    [InlineData("TriggerAsync")]
    [InlineData("remind/" + HandoffRunActor.WakeReminder)]
    public async Task An_actor_call_one_byte_over_the_actor_call_body_limit_is_a_413_problem_and_reaches_no_actor(string method)
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, logs: logs);
        var limit = HandoffServiceExtensions.ActorCallBodyLimit(factory.Services.GetRequiredService<IOptions<HandoffOptions>>().Value);
        var body = "{\"x\":\"" + new string('a', (int)limit - 7) + "\"}";
        Assert.Equal(limit + 1, Encoding.UTF8.GetByteCount(body));
        var request = new HttpRequestMessage(HttpMethod.Put, $"/actors/{Actor}/77/method/{method}") { Content = new StringContent(body, Encoding.UTF8, "application/json") };

        var response = await factory.CreateSidecarClient().SendAsync(request);

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/body-too-large", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
        Assert.Equal(0, cursor.LaunchRequests);
        Assert.Null(factory.Sidecar.GetActorState(Actor, "77", "snapshot"));
    }

    [Theory]
    [InlineData("{\"value\":{}}")]
    [InlineData("{\"value\":{\"report\":null}}")]
    [InlineData("{\"value\":{\"report\":{}}}")]
    [InlineData("{\"value\":{\"report\":{\"integration_id\":1,\"agent\":{\"id\":null,\"status\":\"running\"}}}}")]
    // Not an object where the argument is looked for: the body, or its value (looked into, either would throw, a 500).
    [InlineData("[1]")]
    [InlineData("{\"value\":[1]}")]
    public async Task A_proxy_call_whose_argument_is_missing_or_null_where_its_type_says_never_is_a_400_not_a_failed_turn(string body)
    {
        // As the SDK's proxy calls (this app's own): the method in a header, the argument under the body's value. Any app
        // with the interface can send one. The SDK read a missing argument as null, and missing members too: the engine met
        // them as a NullReferenceException, a failed turn logged as the store's fault.
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, logs: logs);
        var request = ProxyCall("ApplyAgentReportAsync", body);

        var response = await factory.CreateSidecarClient().SendAsync(request);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/invalid-body", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "ActorTurnFailed");
    }

    [Theory]
    // A method that takes no argument, with a body the SDK cannot read as its message (the proxy sends none).
    [InlineData("GetStateAsync", "{\"value\":1}", null)]
    [InlineData("GetStateAsync", "not json", null)]
    // A header that is not the SDK's XML, or names an interface the actor does not have.
    [InlineData("GetStateAsync", "", "not xml")]
    [InlineData("GetStateAsync", "", "<z:anyType xmlns:z=\"http://schemas.microsoft.com/2003/10/Serialization/\"/>")]
    public async Task A_proxy_call_the_sdk_cannot_read_is_a_400_problem_not_the_sdks_exception_in_a_200(string method, string body, string? header)
    {
        // The SDK answers a proxy's call it fails to read (its header, its body) as it answers an actor's exception: a 200
        // carrying the exception's type and message (and, in a header, the method and line it was thrown at), which any
        // app of the mesh could read. Only a failed turn is answered that way (its own fixed text, for the app's proxy).
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, logs: logs);
        var answers = new AnswerCapture(factory.Server.CreateHandler());
        var request = ProxyCall(method, body, header);

        var response = await new HttpClient(answers) { BaseAddress = factory.Server.BaseAddress }.SendAsync(request);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/invalid-request", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
        Assert.False(response.Headers.Contains("X-DaprErrorResponseHeader"));
        var seen = Assert.Single(answers.Seen).Text;
        Assert.DoesNotContain("Exception", seen, StringComparison.Ordinal);
        Assert.DoesNotContain("Line Number", seen, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("{\"value\":{\"report\":null}}")]
    [InlineData("{\"value\":{}}")]
    [InlineData("")]
    public async Task A_proxy_call_whose_header_names_another_method_than_its_path_is_a_400_and_reaches_no_turn(string body)
    {
        // The SDK reads the body as the path's method takes it and runs the method its header names: the argument check
        // (made for the path's method, here one without argument) is not what guards the other. The SDK fails before any
        // turn; its exception is not the answer.
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, logs: logs);
        var request = ProxyCall("GetStateAsync", body, header: ProxyHeader("ApplyAgentReportAsync"));

        var response = await factory.CreateSidecarClient().SendAsync(request);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/invalid-request", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "ActorTurnFailed");
        Assert.Null(factory.Sidecar.GetActorState(Actor, "77", "snapshot"));
    }

    [Fact]
    public async Task A_proxy_call_of_a_method_without_argument_and_without_body_is_answered_as_the_sdk_writes_it()
    {
        // The app's own proxy reads a run this way: the guard above must leave a good call's answer whole.
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url);
        var client = factory.CreateSidecarClient();
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/77/handoff", Payloads.Trigger(Payloads.Run(77, ["acme/shop"], automation: false)))).StatusCode);
        var request = ProxyCall("GetStateAsync", body: null);

        var response = await client.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.False(response.Headers.Contains("X-DaprErrorResponseHeader"));
        Assert.Contains("acme/shop", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    /// <summary>
    /// A call as the SDK's proxy (this app's own) makes it to run 77: the method's header, naming the path's method unless
    /// another header is given, and the body as bytes (none at all when null, as for a method without argument).
    /// </summary>
    private static HttpRequestMessage ProxyCall(string pathMethod, string? body, string? header = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Put, $"/actors/{Actor}/77/method/{pathMethod}")
        {
            Content = body is null ? new ByteArrayContent([]) : new StringContent(body, Encoding.UTF8, "application/octet-stream"),
        };
        request.Headers.TryAddWithoutValidation("X-DaprRequestHeader", header ?? ProxyHeader(pathMethod));
        return request;
    }

    /// <summary>The SDK's id of a method of IHandoffRunActor, as its proxy writes it in the header (a CRC of its names).</summary>
    private static int SdkMethodId(string method) =>
        (int)typeof(Dapr.Actors.ActorId).Assembly.GetType("Dapr.Actors.Common.IdUtil", throwOnError: true)!
            .GetMethod("ComputeIdWithCRC", System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.NonPublic, [typeof(System.Reflection.MethodInfo)])!
            .Invoke(null, [typeof(IHandoffRunActor).GetMethod(method)!])!;

    /// <summary>The proxy's header for a method of IHandoffRunActor: its SDK id and its name.</summary>
    private static string ProxyHeader(string methodName) =>
        string.Format(System.Globalization.CultureInfo.InvariantCulture, """<z:anyType i:type="a:ActorHeader" xmlns:z="http://schemas.microsoft.com/2003/10/Serialization/" xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns:a="urn:actors"><a:MethodId>{0}</a:MethodId><a:InterfaceId>1372859113</a:InterfaceId><a:ActorId xmlns:b="http://schemas.datacontract.org/2004/07/Dapr.Actors"><b:ActorId>77</b:ActorId></a:ActorId><a:CallContext>f7ed88f5-7c1b-4b41-8bb3-ade2ee4d97dd</a:CallContext><a:Headers xmlns:b="http://schemas.microsoft.com/2003/10/Serialization/Arrays"/><a:MethodName>{1}</a:MethodName><a:ActorType>HandoffRunActor</a:ActorType></z:anyType>""", SdkMethodId(methodName), methodName);

    [Theory]
    [InlineData("{}")]
    [InlineData("{\"data\":null}")]
    [InlineData("{\"data\":{\"note\":1},\"dueTime\":\"\",\"period\":\"\"}")]
    [InlineData("{\"data\":\"not base64!\",\"dueTime\":\"\",\"period\":\"\"}")]
    [InlineData("{\"data\":null,\"dueTime\":\"1h\",\"period\":\"\"}")]
    [InlineData("{\"data\":null,\"dueTime\":null,\"period\":null}")]
    public async Task A_reminder_is_read_by_its_name_so_a_body_the_sdk_cannot_read_still_wakes_the_run_not_a_500(string body)
    {
        // The actor trusts only a reminder's name (the Scheduler sends empty times). The SDK reads the body first, and threw
        // for shapes it does not expect (data that is not base64, a duration in another form, a missing time): a 500 and
        // an error in the log, and daprd firing the reminder again, to the same end, while the run's retry waited.
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, time: time);
        var client = factory.CreateSidecarClient();
        cursor.Script("acme/shop", FakeCursor.Status(500));
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/78/handoff", Payloads.Trigger(Payloads.Run(78, ["acme/shop"], automation: false)))).StatusCode);
        time.Advance(TimeSpan.FromMinutes(1));

        var fired = await client.PutAsync($"/actors/{Actor}/78/method/remind/{HandoffRunActor.WakeReminder}", new StringContent(body, Encoding.UTF8, "application/json"));

        Assert.Equal(HttpStatusCode.OK, fired.StatusCode);
        await Eventually.True(() => DaprModeTest.LaunchPhase(factory.Sidecar, 78) == "launched");
        Assert.Equal(2, cursor.LaunchRequests);
    }

    /// <summary>Keeps what the app answered the sidecar: bodies and headers, with base64 header values decoded too.</summary>
    private sealed class AnswerCapture(HttpMessageHandler inner) : DelegatingHandler(inner)
    {
        public List<(string Path, string Text)> Seen { get; } = [];

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var response = await base.SendAsync(request, cancellationToken);
            var body = await response.Content.ReadAsByteArrayAsync(cancellationToken);
            var headers = string.Join("\n", response.Headers.Select(header => $"{header.Key}: {string.Join(",", header.Value)}"));
            var decoded = string.Join("\n", System.Text.RegularExpressions.Regex.Matches(headers, "[A-Za-z0-9+/]{16,}={0,2}").Select(match => Decoded(match.Value)));
            lock (Seen)
            {
                Seen.Add((request.RequestUri!.AbsolutePath, $"{Encoding.UTF8.GetString(body)}\n{headers}\n{decoded}"));
            }

            var copy = new HttpResponseMessage(response.StatusCode) { Content = new ByteArrayContent(body), RequestMessage = request };
            foreach (var header in response.Headers)
            {
                copy.Headers.TryAddWithoutValidation(header.Key, header.Value);
            }

            foreach (var header in response.Content.Headers)
            {
                copy.Content.Headers.TryAddWithoutValidation(header.Key, header.Value);
            }

            return copy;
        }

        private static string Decoded(string base64)
        {
            var bytes = new byte[base64.Length];
            return Convert.TryFromBase64String(base64, bytes, out var length) ? Encoding.UTF8.GetString(bytes, 0, length) : string.Empty;
        }
    }

    public void Dispose() => cursor.Dispose();
}
