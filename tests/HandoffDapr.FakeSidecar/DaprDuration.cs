using System.Globalization;
using System.Text;

namespace HandoffDapr.FakeSidecar;

/// <summary>A parsed Dapr duration: calendar parts kept apart from the exact part, as dapr/kit does.</summary>
internal readonly record struct DaprDuration(int Years, int Months, int Days, TimeSpan Exact, int Repetitions)
{
    public bool HasCalendarPart => Years != 0 || Months != 0 || Days != 0;

    public DateTimeOffset AddTo(DateTimeOffset t) => t.AddYears(Years).AddMonths(Months).AddDays(Days).Add(Exact);
}

/// <summary>
/// The duration/time formats daprd accepts for reminders and timers, after dapr/kit time/time.go:
/// ISO 8601 durations (optionally <c>Rn/</c> repeated), Go <c>time.ParseDuration</c> strings such as
/// <c>0h0m5s0ms</c> (what the .NET SDK sends), and for due times also RFC 3339 instants.
/// </summary>
internal static class DaprDurationParser
{
    /// <summary>kit ParseDuration: ISO 8601 first, then Go duration; repetitions -1 = unlimited.</summary>
    public static bool TryParseDuration(string s, out DaprDuration d)
    {
        if (TryParseIso8601(s, out d))
        {
            return true;
        }

        if (TryParseGoDuration(s, out var exact))
        {
            d = new DaprDuration(0, 0, 0, exact, -1);
            return true;
        }

        d = default;
        return false;
    }

    /// <summary>kit ParseTime: ISO duration (no repetitions) or Go duration after <paramref name="offset"/>, or an RFC 3339 instant.</summary>
    public static bool TryParseTime(string s, DateTimeOffset offset, out DateTimeOffset at, out string? error)
    {
        error = null;
        if (TryParseIso8601(s, out var iso))
        {
            if (iso.Repetitions != -1)
            {
                at = default;
                error = "repetitions are not allowed";
                return false;
            }

            at = iso.AddTo(offset);
            return true;
        }

        if (TryParseGoDuration(s, out var exact))
        {
            at = offset.Add(exact);
            return true;
        }

        if (DateTimeOffset.TryParseExact(s, ["yyyy-MM-dd'T'HH:mm:ss.FFFFFFFK", "yyyy-MM-dd'T'HH:mm:ssK"],
                CultureInfo.InvariantCulture, DateTimeStyles.None, out at))
        {
            return true;
        }

        error = "unsupported time/duration format: " + s;
        return false;
    }

    /// <summary>Port of kit ParseISO8601Duration (lenient the same way: "M" is months before T, minutes after).</summary>
    public static bool TryParseIso8601(string from, out DaprDuration d)
    {
        d = default;
        int years = 0, months = 0, days = 0, repetition = -1;
        var duration = TimeSpan.Zero;
        var l = from.Length;
        if (l < 2)
        {
            return false;
        }

        var i = 0;
        if (from[0] == 'R')
        {
            do
            {
                i++;
            }
            while (i != l && from[i] != '/');

            if (i - 1 < 1 || !int.TryParse(from.AsSpan(1, i - 1), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out repetition))
            {
                return false;
            }

            i++;
            if (i >= l)
            {
                d = new DaprDuration(0, 0, 0, TimeSpan.Zero, repetition);
                return true;
            }
        }

        if (from[i] != 'P')
        {
            return false;
        }

        i++;
        var start = i;
        var inTime = false;
        for (; i < l; i++)
        {
            var c = from[i];
            if (c == 'T')
            {
                if (start != i)
                {
                    return false;
                }

                inTime = true;
                start = i + 1;
                continue;
            }

            if (c is not ('Y' or 'W' or 'D' or 'H' or 'S' or 'M'))
            {
                continue; // kit skips other characters; they end up inside the next number and fail Atoi
            }

            if (start == i || !int.TryParse(from.AsSpan(start, i - start), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var n))
            {
                return false;
            }

            switch (c)
            {
                case 'Y' when !inTime: years = n; break;
                case 'W' when !inTime: days += n * 7; break;
                case 'D' when !inTime: days += n; break;
                case 'H' when inTime: duration += TimeSpan.FromHours(n); break;
                case 'S' when inTime: duration += TimeSpan.FromSeconds(n); break;
                case 'M': if (inTime) { duration += TimeSpan.FromMinutes(n); } else { months = n; } break;
                default: return false;
            }

            start = i + 1;
        }

        d = new DaprDuration(years, months, days, duration, repetition);
        return true;
    }

    /// <summary>Go's time.ParseDuration: <c>[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+</c>, units ns us µs ms s m h; "0" alone allowed.</summary>
    public static bool TryParseGoDuration(string s, out TimeSpan value)
    {
        value = TimeSpan.Zero;
        var i = 0;
        var negative = false;
        if (s.Length > 0 && (s[0] == '-' || s[0] == '+'))
        {
            negative = s[0] == '-';
            i++;
        }

        if (s.Length - i == 1 && s[i] == '0')
        {
            return true;
        }

        if (i == s.Length)
        {
            return false;
        }

        decimal totalNs = 0;
        while (i < s.Length)
        {
            var numStart = i;
            while (i < s.Length && char.IsAsciiDigit(s[i]))
            {
                i++;
            }

            var intPart = s[numStart..i];
            var fracPart = "";
            if (i < s.Length && s[i] == '.')
            {
                i++;
                var fracStart = i;
                while (i < s.Length && char.IsAsciiDigit(s[i]))
                {
                    i++;
                }

                fracPart = s[fracStart..i];
            }

            if (intPart.Length == 0 && fracPart.Length == 0)
            {
                return false;
            }

            var unitStart = i;
            while (i < s.Length && s[i] != '.' && !char.IsAsciiDigit(s[i]))
            {
                i++;
            }

            decimal unitNs = s[unitStart..i] switch
            {
                "ns" => 1m,
                "us" or "\u00b5s" or "\u03bcs" => 1_000m,
                "ms" => 1_000_000m,
                "s" => 1_000_000_000m,
                "m" => 60m * 1_000_000_000m,
                "h" => 3600m * 1_000_000_000m,
                _ => -1m,
            };
            if (unitNs < 0)
            {
                return false;
            }

            var number = decimal.Parse((intPart.Length == 0 ? "0" : intPart) + (fracPart.Length > 0 ? "." + fracPart : ""), CultureInfo.InvariantCulture);
            totalNs += number * unitNs;
            if (totalNs > long.MaxValue)
            {
                return false; // Go: "invalid duration" on overflow
            }
        }

        var ticks = (long)(totalNs / 100m);
        value = TimeSpan.FromTicks(negative ? -ticks : ticks);
        return true;
    }

    /// <summary>Go's time.Duration.String(): "1h0m0s", "1m30s", "5s", "1.5s", "500ms", "0s".</summary>
    public static string FormatGoDuration(TimeSpan d)
    {
        if (d == TimeSpan.Zero)
        {
            return "0s";
        }

        var sb = new StringBuilder();
        var ns = (decimal)d.Ticks * 100m;
        if (ns < 0)
        {
            sb.Append('-');
            ns = -ns;
        }

        if (ns < 1_000_000_000m)
        {
            var (unit, scale) = ns < 1_000m ? ("ns", 1m) : ns < 1_000_000m ? ("\u00b5s", 1_000m) : ("ms", 1_000_000m);
            sb.Append(Trim(ns / scale)).Append(unit);
            return sb.ToString();
        }

        var hours = decimal.Floor(ns / 3_600_000_000_000m);
        ns -= hours * 3_600_000_000_000m;
        var minutes = decimal.Floor(ns / 60_000_000_000m);
        ns -= minutes * 60_000_000_000m;
        var seconds = ns / 1_000_000_000m;
        if (hours > 0)
        {
            sb.Append(hours.ToString(CultureInfo.InvariantCulture)).Append('h');
        }

        if (hours > 0 || minutes > 0)
        {
            sb.Append(minutes.ToString(CultureInfo.InvariantCulture)).Append('m');
        }

        sb.Append(Trim(seconds)).Append('s');
        return sb.ToString();

        static string Trim(decimal v) => v.ToString("0.#########", CultureInfo.InvariantCulture);
    }
}
