using System.Text.Json;
using Dapr.Actors.Runtime;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// An <see cref="IActorStateManager"/> that keeps saved state as JSON, like the sidecar would, so a test sees
/// exactly what survives a save: values set but not saved are lost on <see cref="ClearCacheAsync"/>.
/// </summary>
public sealed class InMemoryActorStateManager(JsonSerializerOptions json, Dictionary<string, string>? store = null) : IActorStateManager
{
    private readonly Dictionary<string, string> saved = store ?? new();
    private readonly Dictionary<string, object?> pending = new();
    private readonly HashSet<string> removed = new();

    public int Saves { get; private set; }

    public IReadOnlyDictionary<string, string> Saved => saved;

    public Task SetStateAsync<T>(string stateName, T value, CancellationToken cancellationToken = default)
    {
        pending[stateName] = value;
        removed.Remove(stateName);
        return Task.CompletedTask;
    }

    public Task SetStateAsync<T>(string stateName, T value, TimeSpan ttl, CancellationToken cancellationToken = default) =>
        SetStateAsync(stateName, value, cancellationToken);

    /// <summary>The next read of a stored value throws, as a state store that is down would.</summary>
    public bool FailNextRead { get; set; }

    /// <summary>Another actor instance's state manager over the same store, with a cache of its own (a new activation's).</summary>
    public InMemoryActorStateManager OverSameStore() => new(json, saved);

    /// <summary>Awaited before a save is written: a test holds a turn there with it (a slow store, a hung call).</summary>
    public Func<Task>? BeforeSave { get; set; }

    public Task<ConditionalValue<T>> TryGetStateAsync<T>(string stateName, CancellationToken cancellationToken = default)
    {
        if (FailNextRead && !pending.ContainsKey(stateName) && !removed.Contains(stateName))
        {
            FailNextRead = false;
            throw new InvalidOperationException("state store unavailable");
        }

        if (removed.Contains(stateName))
        {
            return Task.FromResult(new ConditionalValue<T>(false, default!));
        }

        if (pending.TryGetValue(stateName, out var value))
        {
            return Task.FromResult(new ConditionalValue<T>(true, (T)value!));
        }

        return Task.FromResult(saved.TryGetValue(stateName, out var text)
            ? new ConditionalValue<T>(true, JsonSerializer.Deserialize<T>(text, json)!)
            : new ConditionalValue<T>(false, default!));
    }

    public async Task<bool> TryRemoveStateAsync(string stateName, CancellationToken cancellationToken = default)
    {
        var exists = await ContainsStateAsync(stateName, cancellationToken);
        pending.Remove(stateName);
        removed.Add(stateName);
        return exists;
    }

    public Task<bool> ContainsStateAsync(string stateName, CancellationToken cancellationToken = default) =>
        Task.FromResult(!removed.Contains(stateName) && (pending.ContainsKey(stateName) || saved.ContainsKey(stateName)));

    public async Task SaveStateAsync(CancellationToken cancellationToken = default)
    {
        if (BeforeSave is { } beforeSave)
        {
            await beforeSave();
        }

        foreach (var (key, value) in pending)
        {
            saved[key] = JsonSerializer.Serialize(value, value?.GetType() ?? typeof(object), json);
        }

        foreach (var key in removed)
        {
            saved.Remove(key);
        }

        pending.Clear();
        removed.Clear();
        Saves++;
    }

    public Task ClearCacheAsync(CancellationToken cancellationToken = default)
    {
        pending.Clear();
        removed.Clear();
        return Task.CompletedTask;
    }

    public async Task<T> GetStateAsync<T>(string stateName, CancellationToken cancellationToken = default)
    {
        var value = await TryGetStateAsync<T>(stateName, cancellationToken);
        return value.HasValue ? value.Value : throw new KeyNotFoundException(stateName);
    }

    public Task AddStateAsync<T>(string stateName, T value, CancellationToken cancellationToken = default) => SetStateAsync(stateName, value, cancellationToken);

    public Task AddStateAsync<T>(string stateName, T value, TimeSpan ttl, CancellationToken cancellationToken = default) => SetStateAsync(stateName, value, cancellationToken);

    public Task RemoveStateAsync(string stateName, CancellationToken cancellationToken = default) => TryRemoveStateAsync(stateName, cancellationToken);

    public async Task<bool> TryAddStateAsync<T>(string stateName, T value, CancellationToken cancellationToken = default)
    {
        if (await ContainsStateAsync(stateName, cancellationToken))
        {
            return false;
        }

        await SetStateAsync(stateName, value, cancellationToken);
        return true;
    }

    public Task<bool> TryAddStateAsync<T>(string stateName, T value, TimeSpan ttl, CancellationToken cancellationToken = default) => TryAddStateAsync(stateName, value, cancellationToken);

    public async Task<T> GetOrAddStateAsync<T>(string stateName, T value, CancellationToken cancellationToken = default)
    {
        var existing = await TryGetStateAsync<T>(stateName, cancellationToken);
        if (existing.HasValue)
        {
            return existing.Value;
        }

        await SetStateAsync(stateName, value, cancellationToken);
        return value;
    }

    public Task<T> GetOrAddStateAsync<T>(string stateName, T value, TimeSpan ttl, CancellationToken cancellationToken = default) => GetOrAddStateAsync(stateName, value, cancellationToken);

    public async Task<T> AddOrUpdateStateAsync<T>(string stateName, T addValue, Func<string, T, T> updateValueFactory, CancellationToken cancellationToken = default)
    {
        var existing = await TryGetStateAsync<T>(stateName, cancellationToken);
        var value = existing.HasValue ? updateValueFactory(stateName, existing.Value) : addValue;
        await SetStateAsync(stateName, value, cancellationToken);
        return value;
    }

    public Task<T> AddOrUpdateStateAsync<T>(string stateName, T addValue, Func<string, T, T> updateValueFactory, TimeSpan ttl, CancellationToken cancellationToken = default) =>
        AddOrUpdateStateAsync(stateName, addValue, updateValueFactory, cancellationToken);

    public Task UnloadStateAsync(string stateName, UnloadStateOptions? options = null, CancellationToken cancellationToken = default)
    {
        pending.Remove(stateName);
        return Task.CompletedTask;
    }
}

/// <summary>Records reminder registrations instead of sending them to a sidecar.</summary>
public sealed class RecordingTimerManager : ActorTimerManager
{
    public List<ActorReminder> Registered { get; } = [];

    public List<string> Unregistered { get; } = [];

    /// <summary>How many registrations fail as the sidecar's would with its Scheduler unreachable.</summary>
    public int FailNextRegistrations { get; set; }

    public override Task RegisterReminderAsync(ActorReminder reminder)
    {
        if (FailNextRegistrations > 0)
        {
            FailNextRegistrations--;
            throw new Dapr.DaprApiException("error creating reminder: scheduler unavailable", "ERR_ACTOR_REMINDER_CREATE", false);
        }

        Registered.Add(reminder);
        return Task.CompletedTask;
    }

    public override Task UnregisterReminderAsync(ActorReminderToken reminder)
    {
        Unregistered.Add(reminder.Name);
        return Task.CompletedTask;
    }

    public override Task<IActorReminder> GetReminderAsync(ActorReminderToken reminder) => Task.FromResult<IActorReminder>(null!);

    public override Task RegisterTimerAsync(ActorTimer timer) => Task.CompletedTask;

    public override Task UnregisterTimerAsync(ActorTimerToken timer) => Task.CompletedTask;
}
