using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace HandoffDapr.FakeSidecar;

/// <summary>Result of one reminder firing by <see cref="FakeDaprSidecar.FireDueRemindersAsync"/>.</summary>
public sealed record ReminderFiring(RegisteredReminder Reminder, HttpStatusCode StatusCode, string Body);

/// <summary>
/// An in-process stand-in for daprd: the Dapr HTTP API (actors, health, metadata, publish, invoke) on one
/// 127.0.0.1 port and the Dapr gRPC API (bindings, publish, state, metadata) on a second, HTTP/2-only port,
/// so the real Dapr .NET SDK talks to it unchanged. It calls the app through <see cref="AppChannel"/>.
/// </summary>
public sealed class FakeDaprSidecar : IAsyncDisposable
{
    private readonly WebApplication host;
    private readonly AppChannelClient app;
    private readonly ActorStateStore actorState;
    private readonly ReminderClock reminders;
    private readonly StateFaults faults = new();
    private readonly ActorApi actors;
    private readonly PubSubBroker broker;
    private readonly PubSubDelivery delivery;
    private readonly HttpBindingEmulator bindings = new();
    private readonly KeyValueStateStores stateStores;
    private readonly GrpcDispatcher grpc;
    private int grpcPort;

    private FakeDaprSidecar(FakeSidecarOptions options, WebApplication host)
    {
        Options = options;
        this.host = host;
        app = new AppChannelClient(options);
        var hosting = new ActorHosting(app);
        actorState = new ActorStateStore(options.TimeProvider, () => options.StateStoreType == "state.redis");
        reminders = new ReminderClock(options.TimeProvider);
        actors = new ActorApi(options, app, hosting, actorState, reminders, faults);
        broker = new PubSubBroker(options);
        delivery = new PubSubDelivery(options, app, broker);
        stateStores = new KeyValueStateStores(options);
        var metadata = new SidecarMetadata(options, hosting, bindings);
        grpc = new GrpcDispatcher(options, broker, bindings, stateStores, metadata);
        var http = new SidecarHttpApi(options, actors, broker, metadata, app);
        host.Run(context => context.Connection.LocalPort == grpcPort
            ? GrpcKestrelEndpoint.HandleAsync(context, grpc)
            : http.HandleAsync(context));
    }

    /// <summary>The settings it runs with.</summary>
    public FakeSidecarOptions Options { get; }

    /// <summary><c>http://127.0.0.1:{port}</c> (no trailing slash): the app's <c>DAPR_HTTP_ENDPOINT</c>.</summary>
    public Uri HttpEndpoint { get; private set; } = null!;

    /// <summary><c>http://127.0.0.1:{port}</c> (HTTP/2 only): the app's <c>DAPR_GRPC_ENDPOINT</c>.</summary>
    public Uri GrpcEndpoint { get; private set; } = null!;

    /// <summary>
    /// How the sidecar reaches the app (e.g. <c>TestServer.CreateHandler()</c>), with base address
    /// <see cref="FakeSidecarOptions.AppBaseAddress"/>. Null: a socket handler to that address.
    /// Setting it drops the cached <c>dapr/config</c> and <c>dapr/subscribe</c> answers.
    /// </summary>
    public HttpMessageHandler? AppChannel
    {
        get => app.Handler;
        set => app.Handler = value;
    }

    /// <summary>Unhandled exceptions the app threw into an in-memory <see cref="AppChannel"/> (each answered to the sidecar as a 500, as Kestrel would).</summary>
    public IReadOnlyList<Exception> AppExceptions => app.AppExceptions;

    /// <summary>Starts Kestrel on two loopback ports, chosen by the OS unless <see cref="FakeSidecarOptions.HttpPort"/> and <see cref="FakeSidecarOptions.GrpcPort"/> say.</summary>
    public static async Task<FakeDaprSidecar> StartAsync(FakeSidecarOptions? options = null, CancellationToken ct = default)
    {
        options ??= new FakeSidecarOptions();
        ListenOptions? httpListen = null, grpcListen = null;
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore().ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Listen(IPAddress.Loopback, options.HttpPort, l => { l.Protocols = HttpProtocols.Http1; httpListen = l; });
            k.Listen(IPAddress.Loopback, options.GrpcPort, l => { l.Protocols = HttpProtocols.Http2; grpcListen = l; }); // h2c, prior knowledge
        });
        var sidecar = new FakeDaprSidecar(options, builder.Build());
        await sidecar.host.StartAsync(ct).ConfigureAwait(false);
        sidecar.grpcPort = grpcListen!.IPEndPoint!.Port;
        sidecar.HttpEndpoint = new Uri($"http://127.0.0.1:{httpListen!.IPEndPoint!.Port}");
        sidecar.GrpcEndpoint = new Uri($"http://127.0.0.1:{sidecar.grpcPort}");
        return sidecar;
    }

    /// <summary>The gRPC API without a socket, for <c>GrpcChannelOptions.HttpHandler</c>.</summary>
    public HttpMessageHandler CreateGrpcHandler() => new InMemoryGrpcHandler(grpc);

    // ---- actors -------------------------------------------------------------------------------

    /// <summary>An actor state value as stored (daprd re-marshals values: keys sorted, numbers via float64), or null.</summary>
    public JsonElement? GetActorState(string actorType, string actorId, string key) =>
        actorState.Get(actorType, actorId, key) is { } v ? JsonDocument.Parse(v.Value).RootElement.Clone() : null;

    /// <summary>All state of one actor: key → stored JSON text.</summary>
    public IReadOnlyDictionary<string, string> GetActorStateKeys(string actorType, string actorId) => actorState.Snapshot(actorType, actorId);

    /// <summary>When each of one actor's keys expires (from <c>ttlInSeconds</c>); null for a key that never does.</summary>
    public IReadOnlyDictionary<string, DateTimeOffset?> GetActorStateExpiries(string actorType, string actorId) => actorState.Expiries(actorType, actorId);

    /// <summary>Seeds actor state (the value is serialized with web JSON defaults, then stored as daprd would).</summary>
    public void SetActorState(string actorType, string actorId, string key, object? value)
    {
        var element = JsonSerializer.SerializeToElement(value, new JsonSerializerOptions(JsonSerializerDefaults.Web));
        actorState.Set(actorType, actorId, key, GoJson.Reencode(element, preserveNumbers: false));
    }

    /// <summary>Stores <paramref name="raw"/> as it is, JSON or not: actor state the app did not write (edited by hand, damaged).</summary>
    public void SetRawActorState(string actorType, string actorId, string key, string raw) =>
        actorState.Set(actorType, actorId, key, System.Text.Encoding.UTF8.GetBytes(raw));

    /// <summary>Removes one key of an actor's state, as a store evicting it (or an operator deleting it) would.</summary>
    public void RemoveActorState(string actorType, string actorId, string key) => actorState.Remove(actorType, actorId, key);

    /// <summary>Registered reminders.</summary>
    public IReadOnlyCollection<RegisteredReminder> Reminders => reminders.All;

    /// <summary>Registered timers (daprd memory only; removed on deactivation).</summary>
    public IReadOnlyCollection<RegisteredTimer> Timers => actors.Timers;

    /// <summary>
    /// Fires a registered reminder now, as the Scheduler does: <c>PUT actors/{type}/{id}/method/remind/{name}</c> with
    /// <c>{"data":…,"dueTime":"","period":""}</c> under the actor's turn lock. With <paramref name="advanceSchedule"/>
    /// the firing counts as the Scheduler counts it: a success moves the schedule on (one-shot removed, periodic moved
    /// on); a failure (not 200, or the SDK's error header) is retried 1 s later, up to 3 times, before the tick is dropped.
    /// The delivery has the type's <see cref="ActorCallPolicy.CallTimeout"/> (daprd's post-lock policy): one given up on
    /// (or cancelled by a deactivation) answers 500 with daprd's error as its body, and is a failure, while the app's
    /// method may still run.
    /// </summary>
    public async Task<HttpResponseMessage> FireReminderAsync(string actorType, string actorId, string name, bool advanceSchedule = true, CancellationToken ct = default)
    {
        var reminder = reminders.Get(actorType, actorId, name)
            ?? throw new InvalidOperationException($"No reminder '{name}' is registered for {actorType}/{actorId}.");
        var response = await actors.FireReminderAsync(reminder, ct).ConfigureAwait(false);
        if (advanceSchedule)
        {
            CountFiring(reminder, response);
        }

        return response;
    }

    /// <summary>
    /// Fires every reminder due at <paramref name="now"/> (earliest first), then reschedules or removes it as the
    /// Scheduler does: a failed firing is due again 1 s later (up to 3 retries), not spent.
    /// </summary>
    public async Task<IReadOnlyList<ReminderFiring>> FireDueRemindersAsync(DateTimeOffset now, CancellationToken ct = default)
    {
        var fired = new List<ReminderFiring>();
        foreach (var reminder in reminders.Due(now))
        {
            using var response = await actors.FireReminderAsync(reminder, ct).ConfigureAwait(false);
            CountFiring(reminder, response);
            fired.Add(new ReminderFiring(reminder, response.StatusCode, await response.Content.ReadAsStringAsync(ct).ConfigureAwait(false)));
        }

        return fired;
    }

    /// <summary>
    /// daprd's verdict on a reminder firing (pkg/actors/targets/app/app.go doInvokeMethod, pkg/runtime/scheduler/internal/cluster/streamer.go
    /// handleJob): SUCCESS for a 200 without <c>X-DaprErrorResponseHeader</c>, else FAILED, which the Scheduler retries.
    /// </summary>
    private void CountFiring(RegisteredReminder reminder, HttpResponseMessage response)
    {
        if (response.StatusCode == HttpStatusCode.OK && !response.Headers.Contains("X-DaprErrorResponseHeader"))
        {
            reminders.Fired(reminder);
        }
        else
        {
            reminders.FiredAndFailed(reminder);
        }
    }

    /// <summary>Fires a registered timer now (<c>PUT actors/{type}/{id}/method/timer/{name}</c>).</summary>
    public Task<HttpResponseMessage> FireTimerAsync(string actorType, string actorId, string name, CancellationToken ct = default)
    {
        var timer = actors.Timers.FirstOrDefault(t => t.ActorType == actorType && t.ActorId == actorId && t.Name == name)
            ?? throw new InvalidOperationException($"No timer '{name}' is registered for {actorType}/{actorId}.");
        return actors.FireTimerAsync(timer, ct);
    }

    /// <summary>Awaited before a gRPC publish is taken (its topic, the call's cancellation): a slow broker.</summary>
    public Func<string, CancellationToken, Task>? BeforePublish { get => grpc.BeforePublish; set => grpc.BeforePublish = value; }

    /// <summary>Awaited before each actor state read: wait in it (without blocking) for a slow state store.</summary>
    public Func<ActorStateCall, Task>? BeforeActorStateRead { get => actors.BeforeStateRead; set => actors.BeforeStateRead = value; }

    /// <summary>Awaited before a valid actor state transaction is applied: wait in it (without blocking) for a slow write.</summary>
    public Func<ActorStateCall, Task>? BeforeActorStateTransaction { get => actors.BeforeStateTransaction; set => actors.BeforeStateTransaction = value; }

    /// <summary>Calls into the app (actor method call attempts, reminder and timer deliveries) given up on at their <see cref="ActorCallPolicy.CallTimeout"/> (the app's method may have run on).</summary>
    public int ActorCallTimeouts => actors.TimedOutCalls;

    /// <summary>Every actor method call attempt (a retried call makes several), in the order they ended, with daprd's error for a failed one.</summary>
    public IReadOnlyList<ActorCallAttempt> ActorCallAttempts => actors.Attempts;

    /// <summary>Fails reminder registrations the predicate matches (type, id, name) with ERR_ACTOR_REMINDER_CREATE.</summary>
    public Func<string, string, string, bool>? FailReminderRegistration { get => actors.FailReminderRegistration; set => actors.FailReminderRegistration = value; }

    /// <summary>
    /// Deactivates an actor (<c>DELETE actors/{type}/{id}</c>) as daprd does on idle timeout, rebalancing or shutdown. By
    /// default (<see cref="FakeSidecarOptions.DeactivationCancelsCalls"/>) a call of the actor in progress is cancelled,
    /// not waited for, and the DELETE is sent while the app's method may still run.
    /// </summary>
    public Task<HttpResponseMessage> DeactivateActorAsync(string actorType, string actorId, CancellationToken ct = default) =>
        actors.DeactivateAsync(actorType, actorId, ct);

    /// <summary>Makes the next <paramref name="count"/> actor state saves fail with 500 ERR_ACTOR_STATE_TRANSACTION_SAVE.</summary>
    public void FailNextActorStateSaves(int count, string message = "injected fault: state store unavailable") =>
        faults.FailNextTransactions(count, message);

    /// <summary>Fails matching actor state calls (reads: ERR_ACTOR_STATE_GET, saves: ERR_ACTOR_STATE_TRANSACTION_SAVE) until disposed.</summary>
    public IDisposable FailActorStateOperations(Func<ActorStateCall, bool> predicate, string message = "injected fault: state store unavailable") =>
        faults.Add(predicate, message);

    // ---- pub/sub ------------------------------------------------------------------------------

    /// <summary>Everything put on a topic: app publishes (gRPC or HTTP) and dead letters.</summary>
    public IReadOnlyList<PublishedEvent> Published => broker.Published;

    /// <summary>
    /// Delivers an event as if another app had published <paramref name="data"/> (JSON, web defaults) to
    /// (<paramref name="pubsubName"/>, <paramref name="topic"/>): a daprd CloudEvent POSTed to the app's route.
    /// </summary>
    public Task<DeliveryResult> DeliverEventAsync(string pubsubName, string topic, object? data, string? cloudEventId = null, string? source = null, CancellationToken ct = default)
    {
        var bytes = data is JsonElement element
            ? Encoding.UTF8.GetBytes(element.GetRawText())
            : JsonSerializer.SerializeToUtf8Bytes(data, new JsonSerializerOptions(JsonSerializerDefaults.Web));
        return DeliverRawEventAsync(pubsubName, topic, bytes, "application/json", cloudEventId, source, ct);
    }

    /// <summary>Delivers a payload of any content type (JSON → <c>data</c>, octet-stream → <c>data_base64</c>, else a string; JSON that does not parse becomes a string too).</summary>
    public Task<DeliveryResult> DeliverRawEventAsync(string pubsubName, string topic, byte[] data, string contentType, string? cloudEventId = null, string? source = null, CancellationToken ct = default)
    {
        var envelope = CloudEvents.Envelope(cloudEventId, source ?? Options.AppId, topic, pubsubName, contentType, data,
            new Dictionary<string, string>(), Options.TimeProvider.GetUtcNow());
        return delivery.DeliverAsync(pubsubName, topic, envelope, ct);
    }

    /// <summary>Delivers exact broker bytes (e.g. a malformed CloudEvent) to the subscription of (pubsub, topic).</summary>
    public Task<DeliveryResult> DeliverBrokerMessageAsync(string pubsubName, string topic, byte[] message, CancellationToken ct = default) =>
        delivery.DeliverAsync(pubsubName, topic, message, ct);

    /// <summary>Delivers an event the app published (or a dead letter) to the app's own subscription for its topic.</summary>
    public Task<DeliveryResult> DeliverAsync(PublishedEvent published, CancellationToken ct = default) =>
        delivery.DeliverAsync(published.PubsubName, published.Topic, published.CloudEvent, ct);

    /// <summary>Re-reads <c>GET dapr/subscribe</c> on the next delivery.</summary>
    public void ForgetSubscriptions() => delivery.ForgetSubscriptions();

    // ---- bindings and state stores ------------------------------------------------------------

    /// <summary>
    /// Adds a <c>bindings.http</c> output binding. <paramref name="componentMetadata"/> takes the component's
    /// metadata (<c>securityToken</c>, <c>securityTokenHeader</c>, <c>responseTimeout</c>, <c>errorIfNot2XX</c>,
    /// <c>maxResponseBodySize</c>); <paramref name="handler"/> replaces the network (e.g. a test server's handler).
    /// </summary>
    public void AddHttpBinding(string name, Uri url, IReadOnlyDictionary<string, string>? componentMetadata = null, HttpMessageHandler? handler = null) =>
        bindings.Add(name, url, componentMetadata, handler);

    /// <summary>Every InvokeBinding call, in order.</summary>
    public IReadOnlyList<BindingInvocation> BindingInvocations => bindings.Invocations;

    /// <summary>A key/value state store item as saved through <c>DaprClient.SaveStateAsync</c>, or null.</summary>
    public byte[]? GetStateStoreValue(string storeName, string key) => stateStores.Get(storeName, key)?.Value;

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await host.StopAsync().ConfigureAwait(false);
        await host.DisposeAsync().ConfigureAwait(false);
        app.Dispose();
        bindings.Dispose();
    }
}
