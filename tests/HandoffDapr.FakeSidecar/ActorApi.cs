using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace HandoffDapr.FakeSidecar;

/// <summary>
/// daprd's actor HTTP API (dapr/dapr pkg/api/http/actors.go) and its calls into the app
/// (pkg/actors/targets/app/transport/http/http.go): state, reminders, timers, method invocation under a per-id turn lock.
/// </summary>
internal sealed class ActorApi(
    FakeSidecarOptions options,
    AppChannelClient app,
    ActorHosting hosting,
    ActorStateStore state,
    ReminderClock reminders,
    StateFaults faults)
{
    /// <summary>Registrations it matches (type, id, name) fail as daprd answers a Scheduler that cannot be reached.</summary>
    public Func<string, string, string, bool>? FailReminderRegistration { get; set; }

    private readonly ActorTurnLocks locks = new();

    /// <summary>
    /// daprd's actor table: the ids it has activated (a method call, reminder or timer for the id: router.go
    /// table.GetOrCreate) and not deactivated since (targets/app/app.go Deactivate deletes it from the table before it
    /// calls the app).
    /// </summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<(string Type, string Id), byte> active = new();

    /// <summary>
    /// Per id, the life of daprd's actor lock (targets/app/lock/lock.go, one per activation): a call takes the current one
    /// before it waits for the turn, and a deactivation closes it (<see cref="FakeSidecarOptions.DeactivationCancelsCalls"/>),
    /// which cancels the call holding the turn and those waiting for it.
    /// </summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<(string Type, string Id), CancellationTokenSource> activations = new();

    /// <summary>Orders a call's entry into the table against a deactivation's removal (see <see cref="Activate"/>).</summary>
    private readonly object activationGate = new();
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, ActorCircuitBreaker> breakers = new(StringComparer.Ordinal);
    private readonly object timerGate = new();
    private readonly Dictionary<(string Type, string Id, string Name), RegisteredTimer> timers = new();

    public IReadOnlyCollection<RegisteredTimer> Timers
    {
        get
        {
            lock (timerGate)
            {
                return timers.Values.ToList();
            }
        }
    }

    /// <summary>Calls into the app (method call attempts, reminder and timer deliveries) given up on at <see cref="ActorCallPolicy.CallTimeout"/>.</summary>
    public int TimedOutCalls => Volatile.Read(ref timedOutCalls);

    private int timedOutCalls;

    /// <summary>Every method call attempt in the order they ended.</summary>
    public IReadOnlyList<ActorCallAttempt> Attempts => attempts.ToList();

    private readonly System.Collections.Concurrent.ConcurrentQueue<ActorCallAttempt> attempts = new();

    /// <summary>
    /// Awaited before each actor state read: a slow state store. Asynchronous, as <see cref="BeforeStateTransaction"/> is,
    /// so a test holding a read holds no thread-pool thread meanwhile.
    /// </summary>
    public Func<ActorStateCall, Task>? BeforeStateRead { get; set; }

    /// <summary>
    /// Awaited before a valid actor state transaction is applied: a slow write. Asynchronous, so a test holding a write
    /// until something else happens (a timer of this sidecar's or the app's among them) holds no thread-pool thread meanwhile.
    /// </summary>
    public Func<ActorStateCall, Task>? BeforeStateTransaction { get; set; }

    public async Task<HttpReply> GetStateAsync(string type, string id, string key)
    {
        if (BeforeStateRead is { } slowRead)
        {
            await slowRead(new ActorStateCall(ActorStateOperation.Get, type, id, [key])).ConfigureAwait(false);
        }

        if (faults.Check(new ActorStateCall(ActorStateOperation.Get, type, id, [key])) is { } fault)
        {
            return DaprErrors.ActorStateGet(fault);
        }

        if (state.Get(type, id, key) is not { } value)
        {
            return HttpReply.Empty(); // 204: the SDK reads an empty body as "no value"
        }

        var reply = HttpReply.JsonBody(value.Value);
        if (options.StateStoreReportsTtlExpireTime && value.ExpiresAt is { } exp)
        {
            // setResponseMetadataHeaders: "metadata.<key>" headers; the SDK reads Metadata.ttlExpireTime.
            reply.Headers.Add(new("Metadata.ttlExpireTime", exp.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture)));
        }

        return reply;
    }

    public async Task<HttpReply> TransactionAsync(string type, string id, byte[] body)
    {
        var (ops, malformed, opError) = ActorStateStore.Parse(body, options.ActorStateTtlEnabled, options.StateStoreRefusesTtlBelowMinusOne);
        if (malformed is not null)
        {
            return DaprErrors.MalformedRequest(malformed);
        }

        // pkg/actors/state/state.go TransactionalStateOperation (ignoreHosted false from pkg/api/http/actors.go):
        // an actor id that is not active on this sidecar cannot save, before its operations are looked at.
        if (!active.ContainsKey((type, id)))
        {
            return DaprErrors.ActorInstanceMissing();
        }

        if (opError is not null)
        {
            return DaprErrors.ActorStateTransactionSave(opError);
        }

        if (faults.Check(new ActorStateCall(ActorStateOperation.Transaction, type, id, ops!.Select(o => o.Key).ToList())) is { } fault)
        {
            return DaprErrors.ActorStateTransactionSave(fault);
        }

        if (BeforeStateTransaction is { } slowWrite)
        {
            await slowWrite(new ActorStateCall(ActorStateOperation.Transaction, type, id, ops!.Select(o => o.Key).ToList())).ConfigureAwait(false);
        }

        state.ApplyTransaction(type, id, ops!);
        return HttpReply.Empty();
    }

    public async Task<HttpReply> CreateReminderAsync(string type, string id, string name, byte[] body, CancellationToken ct)
    {
        JsonElement json;
        try
        {
            json = JsonDocument.Parse(body).RootElement.Clone();
        }
        catch (JsonException ex)
        {
            return DaprErrors.MalformedRequest(ex.Message);
        }

        if (!await hosting.IsHostedAsync(type, ct).ConfigureAwait(false))
        {
            return DaprErrors.ReminderNotHosted();
        }

        if (FailReminderRegistration?.Invoke(type, id, name) == true)
        {
            return DaprErrors.ReminderCreate("injected fault: scheduler unavailable");
        }

        return reminders.Register(type, id, name, json) is { } error ? DaprErrors.ReminderCreate(error) : HttpReply.Empty();
    }

    public async Task<HttpReply> GetReminderAsync(string type, string id, string name, CancellationToken ct)
    {
        if (!await hosting.IsHostedAsync(type, ct).ConfigureAwait(false))
        {
            return DaprErrors.ReminderNotHosted();
        }

        if (reminders.Get(type, id, name) is not { } r)
        {
            return DaprErrors.ReminderNotFound(name);
        }

        // onGetActorReminder's struct order; dueTime/period as the Scheduler holds them; ttl is not reported
        // (the Scheduler keeps the raw TTL string, which daprd fails to parse as RFC 3339 and drops).
        var sb = new StringBuilder("{");
        sb.Append("\"actorID\":").Append(GoJson.Quote(id)).Append(",\"actorType\":").Append(GoJson.Quote(type));
        if (r.Data is { } data)
        {
            sb.Append(",\"data\":").Append(data.GetRawText());
        }

        if (r.DueTime.Length > 0)
        {
            sb.Append(",\"dueTime\":").Append(GoJson.Quote(r.DueTime));
        }

        if (reminders.SchedulerPeriod(type, id, name) is { } period)
        {
            sb.Append(",\"period\":").Append(GoJson.Quote(period));
        }

        sb.Append('}');
        return HttpReply.JsonBody(Encoding.UTF8.GetBytes(sb.ToString()));
    }

    public async Task<HttpReply> DeleteReminderAsync(string type, string id, string name, CancellationToken ct)
    {
        if (!await hosting.IsHostedAsync(type, ct).ConfigureAwait(false))
        {
            return DaprErrors.ReminderNotHosted();
        }

        reminders.Remove(type, id, name);
        return HttpReply.Empty();
    }

    public HttpReply CreateTimer(string type, string id, string name, byte[] body)
    {
        JsonElement json;
        try
        {
            json = JsonDocument.Parse(body).RootElement.Clone();
        }
        catch (JsonException ex)
        {
            return DaprErrors.MalformedRequest(ex.Message);
        }

        var dueTime = GoJson.StringField(json, "dueTime");
        var period = GoJson.StringField(json, "period");
        var ttl = GoJson.StringField(json, "ttl");
        var now = options.TimeProvider.GetUtcNow();
        if (dueTime.Length > 0 && !DaprDurationParser.TryParseTime(dueTime, now, out _, out var dueError))
        {
            return DaprErrors.TimerCreate("error parsing timer due time: " + dueError);
        }

        if (period.Length > 0 && (!DaprDurationParser.TryParseDuration(period, out var p) || p.Repetitions == 0))
        {
            return DaprErrors.TimerCreate("invalid timer period: parse error: unsupported duration format: " + period);
        }

        JsonElement? data = GoJson.TryGetField(json, "data", out var d) && d.ValueKind != JsonValueKind.Null ? d.Clone() : null;
        var timer = new RegisteredTimer(type, id, name, dueTime, period, ttl, GoJson.StringField(json, "callback"), data, now);
        lock (timerGate)
        {
            timers[(type, id, name)] = timer;
        }

        return HttpReply.Empty();
    }

    public HttpReply DeleteTimer(string type, string id, string name)
    {
        lock (timerGate)
        {
            timers.Remove((type, id, name));
        }

        return HttpReply.Empty();
    }

    /// <summary>
    /// <c>v1.0/actors/{type}/{id}/method/{method}</c>: forwarded to the app as <c>PUT actors/{type}/{id}/method/{method}</c>
    /// with the caller's headers (so <c>X-DaprRequestHeader</c> reaches the remoting dispatcher) and the app's reply
    /// (status, body, headers such as <c>X-DaprErrorResponseHeader</c>) returned. A reply other than 200 becomes
    /// daprd's 500 ERR_ACTOR_INVOKE_METHOD. With an <see cref="ActorCallPolicy"/> for the type, the call is retried and
    /// counted by its circuit breaker as daprd's resiliency policy does; an open breaker refuses it without calling the app.
    /// </summary>
    public async Task<HttpReply> InvokeAsync(string type, string id, string method, HttpRequest request, byte[] body, CancellationToken ct)
    {
        var policy = options.ActorCallPolicies.TryGetValue(type, out var p) ? p : null;
        var breaker = policy is { BreakerConsecutiveFailures: > 0 }
            ? breakers.GetOrAdd(policy.BreakerPerActorId ? type + "-" + id : type, _ => new ActorCircuitBreaker(policy, options.TimeProvider))
            : null;
        for (var attempt = 0; ; attempt++)
        {
            if (breaker?.TryEnter() is { } refused)
            {
                // gobreaker's ErrOpenState or ErrTooManyRequests: permanent, the retry stops there.
                return DaprErrors.ActorInvoke(refused);
            }

            var (reply, permanent) = await AttemptAsync(type, id, method, request, body, policy?.CallTimeout ?? TimeSpan.Zero, ct).ConfigureAwait(false);
            var failed = reply.Status != 200 || reply.Headers.Any(h => string.Equals(h.Key, "X-DaprErrorResponseHeader", StringComparison.OrdinalIgnoreCase));
            attempts.Enqueue(new ActorCallAttempt(type, id, method, failed ? ErrorMessage(reply) : null));
            breaker?.Record(!failed);
            // The breaker counts every error; the retry stops at a permanent one (resiliency/policy.go, backoff.Permanent).
            if (!failed || permanent || policy is null || attempt >= policy.MaxRetries)
            {
                return reply;
            }

            if (policy.RetryInterval > TimeSpan.Zero)
            {
                await Task.Delay(policy.RetryInterval, options.TimeProvider, ct).ConfigureAwait(false);
            }
        }
    }

    /// <summary>daprd's message in its error body, or, for the app's 200 with an error header, that header's name.</summary>
    private static string ErrorMessage(HttpReply reply)
    {
        if (reply.Status == 200)
        {
            return "X-DaprErrorResponseHeader";
        }

        if (reply.Body is not { Length: > 0 } body)
        {
            return "";
        }

        using var doc = JsonDocument.Parse(body); // every error this sidecar answers is daprd's JSON error body
        return GoJson.StringField(doc.RootElement, "message");
    }

    /// <returns>
    /// daprd's answer, and whether its error is permanent: the app's 404 (targets/app/app.go doInvokeMethod wraps "actor method
    /// not found" in backoff.Permanent, which router.go callActor wraps again and Call unwraps once), so the policy's retry
    /// does not call the app again.
    /// </returns>
    private async Task<(HttpReply Reply, bool Permanent)> AttemptAsync(string type, string id, string method, HttpRequest request, byte[] body, TimeSpan timeout, CancellationToken ct)
    {
        if (!await hosting.IsHostedAsync(type, ct).ConfigureAwait(false))
        {
            // placement has no table for the type (pkg/actors/internal/placement/.../inflight.go) → router wraps it.
            return (DaprErrors.ActorInvoke($"failed to lookup actor: did not find address for actor '{type}||{id}'"), false);
        }

        var appPath = $"actors/{Escape(type)}/{Escape(id)}/method/{Escape(method)}";
        using var message = new HttpRequestMessage(HttpMethod.Put, appPath + request.QueryString.Value);
        message.Content = new ByteArrayContent(body);
        HeaderForwarding.CopyRequestHeaders(request, message);
        message.Headers.TryAddWithoutValidation("Dapr-API-Call", "true"); // pkg/api/http/actors.go onDirectActorMessage

        HttpResponseMessage response;
        var turn = await EnterTurnAsync(type, id, ct).ConfigureAwait(false);
        if (turn.Lock is null)
        {
            return (DaprErrors.ActorInvoke(ActorLockClosed), false);
        }

        using (turn.Lock)
        {
            Activate(type, id, turn.Closed);
            try
            {
                var (reply, gaveUp) = await SendInTurnAsync(message, timeout, turn.Closed, ct).ConfigureAwait(false);
                if (reply is null)
                {
                    return (DaprErrors.ActorInvoke(gaveUp!), false); // leaving the using releases the turn
                }

                response = reply;
            }
            catch (HttpRequestException ex)
            {
                return (DaprErrors.ActorInvoke(ex.Message), false);
            }
        }

        using (response)
        {
            var responseBody = await response.Content.ReadAsByteArrayAsync(ct).ConfigureAwait(false);
            if (response.StatusCode == System.Net.HttpStatusCode.NotFound)
            {
                return (DaprErrors.ActorInvoke("actor method not found: " + appPath), true);
            }

            if (response.StatusCode != System.Net.HttpStatusCode.OK)
            {
                return (DaprErrors.ActorInvoke($"error from actor service: ({(int)response.StatusCode}) {Encoding.UTF8.GetString(responseBody)}"), false);
            }

            var reply = new HttpReply(200, responseBody, response.Content.Headers.ContentType?.ToString());
            HeaderForwarding.CopyResponseHeaders(response, reply.Headers);
            return (reply, false);
        }
    }

    /// <summary>
    /// Scheduler-style reminder firing: <c>{"data":...,"dueTime":"","period":""}</c> under the actor's turn lock. daprd
    /// delivers it with the type's post-lock policy, the <c>timeout</c> only (targets/app/app.go InvokeReminder calls
    /// doInvokeMethod, which runs ActorPostLockPolicy around the app channel call); the retry and circuit breaker are not
    /// applied (router.go CallReminder calls callReminder once when a policy is defined for the type). A delivery given up
    /// on (timeout, deactivation) reads as a 500 whose body is daprd's error, while the app's method may still run.
    /// </summary>
    public async Task<HttpResponseMessage> FireReminderAsync(RegisteredReminder reminder, CancellationToken ct)
    {
        var json = new StringBuilder("{");
        if (reminder.Data is { } data)
        {
            json.Append("\"data\":").Append(data.GetRawText()).Append(',');
        }

        json.Append("\"dueTime\":\"\",\"period\":\"\"}");
        var path = $"actors/{Escape(reminder.ActorType)}/{Escape(reminder.ActorId)}/method/remind/{Escape(reminder.Name)}";
        return await DeliverAsync(reminder.ActorType, reminder.ActorId, path, json.ToString(), ct).ConfigureAwait(false);
    }

    /// <summary>Timer firing (daprd in-memory timers): <c>{"data","callback","dueTime","period"}</c>; timeout as for reminders (app.go InvokeTimer).</summary>
    public async Task<HttpResponseMessage> FireTimerAsync(RegisteredTimer timer, CancellationToken ct)
    {
        var json = new StringBuilder("{");
        if (timer.Data is { } data)
        {
            json.Append("\"data\":").Append(data.GetRawText()).Append(',');
        }

        json.Append("\"callback\":").Append(GoJson.Quote(timer.Callback))
            .Append(",\"dueTime\":").Append(GoJson.Quote(timer.DueTime))
            .Append(",\"period\":").Append(GoJson.Quote(timer.Period)).Append('}');
        var path = $"actors/{Escape(timer.ActorType)}/{Escape(timer.ActorId)}/method/timer/{Escape(timer.Name)}";
        return await DeliverAsync(timer.ActorType, timer.ActorId, path, json.ToString(), ct).ConfigureAwait(false);
    }

    /// <summary>
    /// Deactivation (<c>DELETE actors/{type}/{id}</c>); the actor's timers die with it. With
    /// <see cref="FakeSidecarOptions.DeactivationCancelsCalls"/> (daprd) it neither waits for the turn nor for a call in
    /// progress: targets/app/app.go Deactivate closes the actor's lock (lock.go Close: the call holding the turn has its
    /// context cancelled, so its request to the app is aborted while the app's method may run on, and calls waiting for
    /// the turn fail with "actor lock is closed"), deletes the id from the table, then sends the DELETE.
    /// </summary>
    public async Task<HttpResponseMessage> DeactivateAsync(string type, string id, CancellationToken ct)
    {
        var path = $"actors/{Escape(type)}/{Escape(id)}";
        HttpResponseMessage response;
        if (options.DeactivationCancelsCalls)
        {
            CancellationTokenSource? closed;
            lock (activationGate)
            {
                active.TryRemove((type, id), out _);
                activations.TryRemove((type, id), out closed);
            }

            if (closed is not null)
            {
                await closed.CancelAsync().ConfigureAwait(false);
            }

            using var message = new HttpRequestMessage(HttpMethod.Delete, path);
            response = await app.SendAsync(message, ct).ConfigureAwait(false);
        }
        else
        {
            response = await DeactivateInTurnAsync(type, id, path, ct).ConfigureAwait(false);
        }

        lock (timerGate)
        {
            foreach (var key in timers.Keys.Where(k => k.Type == type && k.Id == id).ToList())
            {
                timers.Remove(key);
            }
        }

        return response;
    }

    /// <summary>
    /// Puts the id in the table for a call that holds the turn, unless the activation it entered under was deactivated
    /// meanwhile: that call is being cancelled, and re-adding the id would let its saves through as if the DELETE had not
    /// been sent.
    /// </summary>
    private void Activate(string type, string id, CancellationToken entered)
    {
        lock (activationGate)
        {
            if (!entered.CanBeCanceled
                || (activations.TryGetValue((type, id), out var current) && current.Token == entered))
            {
                active.TryAdd((type, id), 0);
            }
        }
    }

    /// <summary>daprd's <c>ErrLockClosed</c> (targets/app/lock/lock.go): a call that waited for the turn of an actor deactivated meanwhile.</summary>
    private const string ActorLockClosed = "actor lock is closed";

    /// <summary>A reminder or timer delivery under the turn, with the type's <see cref="ActorCallPolicy.CallTimeout"/>.</summary>
    private async Task<HttpResponseMessage> DeliverAsync(string type, string id, string path, string json, CancellationToken ct)
    {
        var timeout = options.ActorCallPolicies.TryGetValue(type, out var policy) ? policy.CallTimeout : TimeSpan.Zero;
        using var message = new HttpRequestMessage(HttpMethod.Put, path);
        message.Content = new ByteArrayContent(Encoding.UTF8.GetBytes(json));
        message.Content.Headers.TryAddWithoutValidation("Content-Type", "application/json"); // internalv1pb.JSONContentType

        var turn = await EnterTurnAsync(type, id, ct).ConfigureAwait(false);
        if (turn.Lock is null)
        {
            return GaveUp(ActorLockClosed);
        }

        using (turn.Lock)
        {
            // A reminder or timer activates the actor as a call does.
            Activate(type, id, turn.Closed);
            try
            {
                var (response, gaveUp) = await SendInTurnAsync(message, timeout, turn.Closed, ct).ConfigureAwait(false);
                return response ?? GaveUp(gaveUp!);
            }
            catch (HttpRequestException ex)
            {
                // The app's port refused or dropped the call (its process down): a failed firing, as any error is.
                return GaveUp(ex.Message);
            }
        }

        static HttpResponseMessage GaveUp(string error) =>
            new(System.Net.HttpStatusCode.InternalServerError) { Content = new StringContent(error) };
    }

    /// <summary>
    /// Waits for the actor's turn. With <see cref="FakeSidecarOptions.DeactivationCancelsCalls"/> the wait and the call
    /// made in the turn belong to the id's current activation: <c>Closed</c> is cancelled when it is deactivated, and
    /// <c>Lock</c> is null when that happened while waiting.
    /// </summary>
    private async Task<(IDisposable? Lock, CancellationToken Closed)> EnterTurnAsync(string type, string id, CancellationToken ct)
    {
        if (!options.DeactivationCancelsCalls)
        {
            return (await locks.EnterAsync(type, id, ct).ConfigureAwait(false), CancellationToken.None);
        }

        var closed = activations.GetOrAdd((type, id), _ => new CancellationTokenSource()).Token;
        using var wait = CancellationTokenSource.CreateLinkedTokenSource(ct, closed);
        try
        {
            var turn = await locks.EnterAsync(type, id, wait.Token).ConfigureAwait(false);
            if (closed.IsCancellationRequested)
            {
                // The turn came only as the deactivation cancelled the call holding it: lock.go LockRequest's select sees
                // closeCh, closed first, and the call fails with ErrLockClosed without being started.
                turn.Dispose();
                return (null, closed);
            }

            return (turn, closed);
        }
        catch (OperationCanceledException) when (closed.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            return (null, closed);
        }
    }

    /// <summary>
    /// The call into the app in the turn. Null with daprd's error when it was given up on: past <paramref name="timeout"/>
    /// (resiliency policy.go: the call runs under context.WithTimeout and the runner returns ctx.Err() as soon as the
    /// deadline passes, without waiting for it) or at a deactivation (lock.go cancels the turn's context); either way the
    /// request to the app is aborted, a reply that still arrives is closed unread (the runner's Disposer), and the caller
    /// releases the turn at once.
    /// </summary>
    private async Task<(HttpResponseMessage? Response, string? GaveUp)> SendInTurnAsync(
        HttpRequestMessage message, TimeSpan timeout, CancellationToken closed, CancellationToken ct)
    {
        if (timeout <= TimeSpan.Zero && !closed.CanBeCanceled)
        {
            return (await app.SendAsync(message, ct).ConfigureAwait(false), null);
        }

        var started = options.TimeProvider.GetTimestamp();
        using var deadline = timeout > TimeSpan.Zero ? new CancellationTokenSource(timeout, options.TimeProvider) : new CancellationTokenSource();
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, deadline.Token, closed);
        var send = app.SendAsync(message, linked.Token);
        try
        {
            var response = await send.WaitAsync(linked.Token).ConfigureAwait(false);
            if (!Late() && !closed.IsCancellationRequested)
            {
                return (response, null);
            }

            response.Dispose();
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            _ = send.ContinueWith(t => { if (t.IsCompletedSuccessfully) { t.Result.Dispose(); } else { _ = t.Exception; } }, TaskScheduler.Default);
        }
        catch (HttpRequestException) when (Late() || closed.IsCancellationRequested)
        {
            // The app's connection failed after daprd had given up on the call: the caller hears of the deadline.
        }

        if (deadline.IsCancellationRequested || Late())
        {
            Interlocked.Increment(ref timedOutCalls);
            return (null, "context deadline exceeded");
        }

        return (null, "context canceled");

        // Read the clock, not only the deadline's token: on a busy machine its timer callback can run after the reply is
        // in hand, and daprd's runner, selecting on both from the start, returns at the deadline.
        bool Late() => timeout > TimeSpan.Zero && options.TimeProvider.GetElapsedTime(started) >= timeout;
    }

    /// <summary>The fake's former deactivation, without <see cref="FakeSidecarOptions.DeactivationCancelsCalls"/>: in the turn, after the call in progress.</summary>
    private async Task<HttpResponseMessage> DeactivateInTurnAsync(string type, string id, string path, CancellationToken ct)
    {
        using var message = new HttpRequestMessage(HttpMethod.Delete, path);
        using (await locks.EnterAsync(type, id, ct).ConfigureAwait(false))
        {
            active.TryRemove((type, id), out _); // out of the table before the app hears of it
            return await app.SendAsync(message, ct).ConfigureAwait(false);
        }
    }

    private static string Escape(string segment) => Uri.EscapeDataString(segment);
}
