using System.Collections.Concurrent;

namespace HandoffDapr.Service.Security;

/// <summary>
/// Which refused webhooks are logged: the first per integration and reason in each <see cref="Interval"/>, the line
/// carrying how many were refused since the last one and not logged. Refusals before any rate limiter (an integration
/// not configured, not Cursor's, without a secret) are as many as anyone sends: 650 requests wrote 650 warnings.
/// </summary>
/// <remarks>
/// Keyed only on configured integrations: every id that is not configured shares one key, so a caller spraying ids
/// cannot grow the table, only the count.
/// </remarks>
public sealed class WebhookRejectionLog(TimeProvider time)
{
    public static readonly TimeSpan Interval = TimeSpan.FromMinutes(1);

    private readonly ConcurrentDictionary<(long? ConfiguredIntegration, string Reason), Window> windows = new();

    /// <param name="configuredIntegration">The integration, when it is configured; null for one that is not.</param>
    /// <returns>Null when this refusal is only counted; else how many were not logged since the last line.</returns>
    public long? ShouldLog(long? configuredIntegration, string reason)
    {
        var window = windows.GetOrAdd((configuredIntegration, reason), _ => new Window());
        var now = time.GetTimestamp();
        lock (window)
        {
            if (window.LastLogged is { } last && time.GetElapsedTime(last, now) < Interval)
            {
                window.Unlogged++;
                return null;
            }

            var unlogged = window.Unlogged;
            window.Unlogged = 0;
            window.LastLogged = now;
            return unlogged;
        }
    }

    private sealed class Window
    {
        public long? LastLogged;
        public long Unlogged;
    }
}
