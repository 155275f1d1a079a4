using System.Globalization;
using System.Text;

namespace HandoffDapr.Service.Api;

/// <summary>Text a client chose: made fit for a log line (bounded, no control character to forge a line with), or checked for anything to read.</summary>
internal static class PrintableText
{
    public static string Bounded(string text, int maxLength)
    {
        var cleaned = new string(text.Take(maxLength).Select(c => char.IsControl(c) ? '?' : c).ToArray());
        return text.Length > maxLength ? cleaned + "…" : cleaned;
    }

    /// <summary>
    /// Whether the text has a character a reader can see: not only controls, format characters (zero-width, the byte-order
    /// mark) and spaces of any kind, which <see cref="string.IsNullOrWhiteSpace"/> lets through in part.
    /// </summary>
    public static bool HasVisible(string? text)
    {
        foreach (var rune in (text ?? "").EnumerateRunes())
        {
            if (Rune.GetUnicodeCategory(rune) is not (UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.SpaceSeparator
                or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator or UnicodeCategory.OtherNotAssigned))
            {
                return true;
            }
        }

        return false;
    }
}
