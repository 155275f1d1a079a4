using System.Text.Json;

namespace HandoffDapr.FakeSidecar;

/// <summary>A reminder as registered through <c>PUT v1.0/actors/{type}/{id}/reminders/{name}</c>.</summary>
/// <param name="ActorType">Actor type.</param>
/// <param name="ActorId">Actor id.</param>
/// <param name="Name">Reminder name.</param>
/// <param name="DueTime">The <c>dueTime</c> string as sent (e.g. <c>0h0m5s0ms</c>).</param>
/// <param name="Period">The <c>period</c> string as sent (empty = one-shot).</param>
/// <param name="Ttl">The <c>ttl</c> string as sent.</param>
/// <param name="Data">The registered <c>data</c> JSON value (the .NET SDK sends a base64 string), or null.</param>
/// <param name="RegisteredAt">When it was registered (sidecar clock).</param>
/// <param name="NextDueAt">When it fires next.</param>
/// <param name="RepeatsLeft">Firings left; -1 = unlimited.</param>
public sealed record RegisteredReminder(
    string ActorType,
    string ActorId,
    string Name,
    string DueTime,
    string Period,
    string Ttl,
    JsonElement? Data,
    DateTimeOffset RegisteredAt,
    DateTimeOffset NextDueAt,
    int RepeatsLeft)
{
    /// <summary>The data decoded from base64 (what <c>ReceiveReminderAsync</c> gets as <c>state</c>), or null.</summary>
    public byte[]? DataBytes => Data is { ValueKind: JsonValueKind.String } s && s.TryGetBytesFromBase64(out var b) ? b : null;
}

/// <summary>A timer as registered through <c>PUT v1.0/actors/{type}/{id}/timers/{name}</c> (lives in sidecar memory only).</summary>
public sealed record RegisteredTimer(
    string ActorType,
    string ActorId,
    string Name,
    string DueTime,
    string Period,
    string Ttl,
    string Callback,
    JsonElement? Data,
    DateTimeOffset RegisteredAt);
