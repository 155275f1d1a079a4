using System.Globalization;
using System.Text;

namespace HandoffDapr.Core.Serialization;

/// <summary>
/// Text from outside (a client's, a provider's): made fit for a log line or an echo (bounded, no control or line
/// separator to forge a line with, no format character to reorder or hide its text), or checked for anything to read.
/// </summary>
internal static class PrintableText
{
    /// <summary>
    /// The first <paramref name="maxLength"/> UTF-16 units, each control or format character (bidi overrides and isolates,
    /// zero-width characters, tag characters outside the BMP), line or paragraph separator (U+2028, U+2029: line breaks
    /// to some log viewers) and lone surrogate made '?'; "…" marks a cut.
    /// </summary>
    public static string Bounded(string text, int maxLength)
    {
        var kept = text.Length > maxLength ? text[..maxLength] : text;
        var builder = new StringBuilder(kept.Length + 1);
        for (var i = 0; i < kept.Length;)
        {
            // By rune, so a format character outside the BMP is one '?'; a pair the cut split is a lone surrogate.
            if (Rune.DecodeFromUtf16(kept.AsSpan(i), out var rune, out var used) != System.Buffers.OperationStatus.Done)
            {
                builder.Append('?');
                i += Math.Max(used, 1);
                continue;
            }

            if (Rune.GetUnicodeCategory(rune) is UnicodeCategory.Control or UnicodeCategory.Format
                or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator)
            {
                builder.Append('?');
            }
            else
            {
                builder.Append(kept, i, used);
            }

            i += used;
        }

        return text.Length > maxLength ? builder.Append('…').ToString() : builder.ToString();
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
