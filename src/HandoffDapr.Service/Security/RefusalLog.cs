using System.Collections.Concurrent;

namespace HandoffDapr.Service.Security;

/// <summary>
/// Which refused requests are logged: the first per subject and reason in each <see cref="Interval"/>, the line
/// carrying how many were refused since the last one and not logged. Refusals before any rate limiter (a webhook for an
/// integration not configured, not Cursor's, without a secret; an API caller without credentials) are as many as
/// anyone sends: 650 requests wrote 650 warnings. Those of a rate limiter come in bursts of the same kind.
/// </summary>
/// <remarks>
/// Keyed only on a bounded set: a configured integration, or none (every id that is not configured, every group,
/// shares one key), and a fixed reason; so a caller spraying ids cannot grow the table, only the count.
/// </remarks>
public sealed class RefusalLog(TimeProvider time)
{
    public static readonly TimeSpan Interval = TimeSpan.FromMinutes(1);

    private readonly ConcurrentDictionary<(long? Subject, string Reason), Window> windows = new();

    /// <param name="logger">Where the line would go: with its warnings off, nothing is counted (no line would say so).</param>
    /// <param name="subject">A configured integration; null for a refusal not counted apart (an integration not configured, any caller).</param>
    /// <param name="reason">One of a fixed set of texts, unique across the kinds of refusal.</param>
    /// <returns>Null when this refusal is only counted; else how many were not logged since the last line.</returns>
    public long? ShouldLog(ILogger logger, long? subject, string reason)
    {
        if (!logger.IsEnabled(LogLevel.Warning))
        {
            return null;
        }

        var window = windows.GetOrAdd((subject, reason), _ => new Window());
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
