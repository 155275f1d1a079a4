namespace HandoffDapr.Service.Api;

/// <summary>Text a client chose, made fit for a log line: bounded, and with no control character to forge a line with.</summary>
internal static class PrintableText
{
    public static string Bounded(string text, int maxLength)
    {
        var cleaned = new string(text.Take(maxLength).Select(c => char.IsControl(c) ? '?' : c).ToArray());
        return text.Length > maxLength ? cleaned + "…" : cleaned;
    }
}
