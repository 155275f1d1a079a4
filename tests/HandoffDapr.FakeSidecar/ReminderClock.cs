using System.Text.Json;

namespace HandoffDapr.FakeSidecar;

/// <summary>
/// Reminders as the Scheduler (daprd 1.15+) keeps them: first due at registration + <c>dueTime</c>, then every
/// <c>period</c>, <c>Rn/</c> = n firings in total, <c>ttl</c> ends them; re-registering overwrites.
/// Validation and messages follow dapr pkg/actors/internal/scheduler/scheduler.go and dapr/kit time.
/// </summary>
internal sealed class ReminderClock(TimeProvider clock)
{
    private readonly object gate = new();
    private readonly Dictionary<(string Type, string Id, string Name), Entry> reminders = new();

    private sealed record Entry(RegisteredReminder Reminder, TimeSpan? Every, DateTimeOffset? ExpiresAt, int FailedAttempts = 0);

    /// <summary>
    /// The failure policy the Scheduler gives a job that names none (daprd's reminder API sends none for the .NET SDK's
    /// registrations): go-etcd-cron internal/scheduler/builder.go, <c>FailurePolicyConstant{Interval: 1s, MaxRetries: 3}</c>.
    /// </summary>
    internal static readonly TimeSpan FailureRetryInterval = TimeSpan.FromSeconds(1);

    internal const int FailureMaxRetries = 3;

    public IReadOnlyCollection<RegisteredReminder> All
    {
        get
        {
            lock (gate)
            {
                return reminders.Values.Select(e => e.Reminder).ToList();
            }
        }
    }

    /// <summary>Registers (or overwrites) a reminder from its JSON body; returns daprd's error text or null.</summary>
    public string? Register(string type, string id, string name, JsonElement body)
    {
        var dueTime = GoJson.StringField(body, "dueTime");
        var period = GoJson.StringField(body, "period");
        var ttl = GoJson.StringField(body, "ttl");
        JsonElement? data = GoJson.TryGetField(body, "data", out var d) && d.ValueKind != JsonValueKind.Null ? d.Clone() : null;
        var now = clock.GetUtcNow();

        var first = now;
        if (dueTime.Length > 0 && !DaprDurationParser.TryParseTime(dueTime, now, out first, out var dueError))
        {
            return dueError;
        }

        TimeSpan? every = null;
        var repeats = 1;
        if (period.Length > 0)
        {
            // scheduleFromPeriod: kit ParseDuration, no years/months/days, becomes "@every <go duration>".
            if (!DaprDurationParser.TryParseDuration(period, out var p) || p.HasCalendarPart)
            {
                return "unsupported period format: " + period;
            }

            if (p.Repetitions == 0)
            {
                return "unsupported period format: " + period;
            }

            every = p.Exact > TimeSpan.Zero ? p.Exact : null;
            repeats = every is null ? 1 : p.Repetitions; // -1 = forever
        }

        if (dueTime.Length == 0 && every is { } firstPeriod)
        {
            first = now + firstPeriod; // "@every" with no due time: the first tick is one period out
        }

        DateTimeOffset? expires = null;
        if (ttl.Length > 0)
        {
            if (!DaprDurationParser.TryParseTime(ttl, first, out var exp, out var ttlError))
            {
                return ttlError;
            }

            expires = exp;
        }

        var reminder = new RegisteredReminder(type, id, name, dueTime, period, ttl, data, now, first, repeats);
        lock (gate)
        {
            reminders[(type, id, name)] = new Entry(reminder, every, expires);
        }

        return null;
    }

    public RegisteredReminder? Get(string type, string id, string name)
    {
        lock (gate)
        {
            return reminders.TryGetValue((type, id, name), out var e) ? e.Reminder : null;
        }
    }

    /// <summary>The period as the Scheduler reports it back (<c>@every 1m0s</c>), or null for one-shot reminders.</summary>
    public string? SchedulerPeriod(string type, string id, string name)
    {
        lock (gate)
        {
            return reminders.TryGetValue((type, id, name), out var e) && e.Reminder.Period.Length > 0 && e.Every is { } every
                ? "@every " + DaprDurationParser.FormatGoDuration(every)
                : null;
        }
    }

    public bool Remove(string type, string id, string name)
    {
        lock (gate)
        {
            return reminders.Remove((type, id, name));
        }
    }

    public void Clear()
    {
        lock (gate)
        {
            reminders.Clear();
        }
    }

    /// <summary>Reminders due at <paramref name="now"/>, earliest first; expired ones are dropped.</summary>
    public List<RegisteredReminder> Due(DateTimeOffset now)
    {
        lock (gate)
        {
            foreach (var key in reminders.Where(kv => kv.Value.ExpiresAt is { } exp && exp <= kv.Value.Reminder.NextDueAt).Select(kv => kv.Key).ToList())
            {
                reminders.Remove(key);
            }

            return reminders.Values.Select(e => e.Reminder).Where(r => r.NextDueAt <= now).OrderBy(r => r.NextDueAt).ToList();
        }
    }

    /// <summary>
    /// After a firing the app failed (daprd reports FAILED to the Scheduler: a status other than 200, or the SDK's
    /// X-DaprErrorResponseHeader): the same tick is tried again 1 s later, up to 3 times; after the last, the tick counts
    /// as done (one-shot removed, periodic moved on). go-etcd-cron internal/counter/counter.go TriggerFailed/policyTryAgain.
    /// A reminder re-registered meanwhile is a new job: the old job's result is dropped
    /// (internal/engine/queue/loops/counters/counters.go handleExecuteResponse).
    /// </summary>
    public void FiredAndFailed(RegisteredReminder fired)
    {
        lock (gate)
        {
            var key = (fired.ActorType, fired.ActorId, fired.Name);
            if (!reminders.TryGetValue(key, out var e) || !ReferenceEquals(e.Reminder, fired))
            {
                return; // re-registered or removed while firing
            }

            var attempts = e.FailedAttempts + 1;
            if (attempts <= FailureMaxRetries)
            {
                reminders[key] = e with { Reminder = e.Reminder with { NextDueAt = e.Reminder.NextDueAt + FailureRetryInterval }, FailedAttempts = attempts };
                return;
            }
        }

        Fired(fired);
    }

    /// <summary>After a firing: one-shot (or last repeat) removed, periodic moved on by one period.</summary>
    public void Fired(RegisteredReminder fired)
    {
        lock (gate)
        {
            var key = (fired.ActorType, fired.ActorId, fired.Name);
            if (!reminders.TryGetValue(key, out var e) || !ReferenceEquals(e.Reminder, fired))
            {
                return; // re-registered or removed while firing
            }

            // A periodic tick retried after failures keeps its schedule: the next one is one period after the first attempt.
            var scheduled = e.Reminder.NextDueAt - (FailureRetryInterval * e.FailedAttempts);
            e = e with { Reminder = e.Reminder with { NextDueAt = scheduled }, FailedAttempts = 0 };

            var left = e.Reminder.RepeatsLeft < 0 ? -1 : e.Reminder.RepeatsLeft - 1;
            if (e.Every is not { } every || left == 0)
            {
                reminders.Remove(key);
                return;
            }

            var next = e.Reminder.NextDueAt + every;
            if (e.ExpiresAt is { } exp && next >= exp)
            {
                reminders.Remove(key);
                return;
            }

            reminders[key] = e with { Reminder = e.Reminder with { NextDueAt = next, RepeatsLeft = left } };
        }
    }
}
