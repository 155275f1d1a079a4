using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using Dapr;
using Dapr.Actors;
using Dapr.Actors.Runtime;

namespace HandoffDapr.FakeSidecar.Tests;

public sealed record ReminderSpec(string Name, string Payload, int DueMs, int PeriodMs);

public sealed record ReceivedReminder(string ActorId, string Name, string Payload, TimeSpan DueTime, TimeSpan Period);

public interface ITestActor : IActor
{
    Task<int> AddAsync(int amount);

    Task<int> GetCountAsync();

    Task<string> SlowAsync(int delayMs);

    /// <summary>Stays inside its turn until two turns (of any actor ids) have been inside at once, or <paramref name="limitMs"/> has passed.</summary>
    Task<string> UntilOverlapAsync(int limitMs);

    Task RegisterReminderAsync(ReminderSpec spec);

    Task<string> DescribeReminderAsync(string name);

    Task FailAsync(string message);

    Task RegisterTimerAsync(string name);
}

/// <summary>Records how many calls are inside each actor id at once.</summary>
public sealed class ConcurrencyProbe
{
    private readonly object gate = new();
    private readonly Dictionary<string, int> perId = new();
    private int overall;

    public int MaxPerId { get; private set; }

    public int MaxOverall { get; private set; }

    /// <summary>How many calls are inside the actor id now.</summary>
    public int Inside(string id)
    {
        lock (gate)
        {
            return perId.GetValueOrDefault(id);
        }
    }

    public IDisposable Enter(string id)
    {
        lock (gate)
        {
            perId[id] = perId.GetValueOrDefault(id) + 1;
            overall++;
            MaxPerId = Math.Max(MaxPerId, perId[id]);
            MaxOverall = Math.Max(MaxOverall, overall);
        }

        return new Exit(() =>
        {
            lock (gate)
            {
                perId[id]--;
                overall--;
            }
        });
    }

    private sealed class Exit(Action action) : IDisposable
    {
        public void Dispose() => action();
    }
}

public sealed class ReminderLog
{
    public ConcurrentQueue<ReceivedReminder> Received { get; } = new();

    public ConcurrentQueue<string> Timers { get; } = new();

    /// <summary>The ids of the actors whose FailAsync ran.</summary>
    public ConcurrentQueue<string> Failures { get; } = new();
}

[Actor(TypeName = "TestActor")]
public sealed class TestActor(ActorHost host, ConcurrencyProbe probe, ReminderLog log) : Actor(host), ITestActor, IRemindable
{
    public async Task<int> AddAsync(int amount)
    {
        var count = await StateManager.GetOrAddStateAsync("count", 0) + amount;
        await StateManager.SetStateAsync("count", count);
        await StateManager.SaveStateAsync();
        return count;
    }

    public async Task<int> GetCountAsync() => await StateManager.GetOrAddStateAsync("count", 0);

    public async Task<string> SlowAsync(int delayMs)
    {
        using (probe.Enter(Id.GetId()))
        {
            await Task.Delay(delayMs);
        }

        return Id.GetId();
    }

    public async Task<string> UntilOverlapAsync(int limitMs)
    {
        using (probe.Enter(Id.GetId()))
        {
            var waited = Stopwatch.StartNew();
            while (probe.MaxOverall < 2 && waited.ElapsedMilliseconds < limitMs)
            {
                await Task.Delay(10);
            }
        }

        return Id.GetId();
    }

    public Task RegisterReminderAsync(ReminderSpec spec) =>
        RegisterReminderAsync(spec.Name, Encoding.UTF8.GetBytes(spec.Payload), TimeSpan.FromMilliseconds(spec.DueMs),
            spec.PeriodMs > 0 ? TimeSpan.FromMilliseconds(spec.PeriodMs) : TimeSpan.FromMilliseconds(-1));

    public async Task<string> DescribeReminderAsync(string name)
    {
        try
        {
            var reminder = await GetReminderAsync(name);
            return reminder is null ? "null" : $"{Encoding.UTF8.GetString(reminder.State)}|{reminder.DueTime}|{reminder.Period}";
        }
        catch (DaprApiException ex)
        {
            return "error:" + ex.ErrorCode;
        }
    }

    public Task FailAsync(string message)
    {
        log.Failures.Enqueue(Id.GetId());
        throw new InvalidOperationException(message);
    }

    public Task RegisterTimerAsync(string name) =>
        RegisterTimerAsync(name, nameof(OnTimerAsync), Encoding.UTF8.GetBytes("tick"), TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(1));

    public Task OnTimerAsync(byte[] data)
    {
        log.Timers.Enqueue(Id.GetId() + ":" + Encoding.UTF8.GetString(data));
        return Task.CompletedTask;
    }

    public async Task ReceiveReminderAsync(string reminderName, byte[] state, TimeSpan dueTime, TimeSpan period)
    {
        var payload = Encoding.UTF8.GetString(state);
        log.Received.Enqueue(new ReceivedReminder(Id.GetId(), reminderName, payload, dueTime, period));
        // A reminder registered with the payload "slow:<ms>" stays in its callback that long.
        if (payload.StartsWith("slow:", StringComparison.Ordinal))
        {
            using (probe.Enter(Id.GetId()))
            {
                await Task.Delay(int.Parse(payload["slow:".Length..], System.Globalization.CultureInfo.InvariantCulture));
            }

            return;
        }

        // A reminder registered with the payload "fail" fails its callback (the SDK answers 500).
        if (payload == "fail")
        {
            throw new InvalidOperationException("reminder callback failed");
        }
    }
}
