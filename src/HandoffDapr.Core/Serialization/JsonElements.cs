using System.Text.Json;

namespace HandoffDapr.Core.Serialization;

/// <summary>Defensive reads of untrusted JSON.</summary>
public static class JsonElements
{
    /// <summary>
    /// A string property, or null when absent, of another type, or not valid UTF-16 (a lone surrogate makes GetString
    /// throw); also null when the search for it meets a property name that is not valid UTF-16 (names are compared from
    /// the object's end, and such a name cannot be compared).
    /// </summary>
    public static string? String(JsonElement element, string property)
    {
        if (!TryGetProperty(element, property, out var value) || value.ValueKind != JsonValueKind.String)
        {
            return null;
        }

        try
        {
            return value.GetString();
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }

    /// <summary>A whole-number property that fits a long, or null when absent, of another type or out of range (or not found, as for <see cref="String(JsonElement, string)"/>).</summary>
    public static long? Int64(JsonElement element, string property) =>
        TryGetProperty(element, property, out var value) && value.ValueKind == JsonValueKind.Number && value.TryGetInt64(out var number) ? number : null;

    /// <summary>
    /// Whether an object in <paramref name="element"/> names a property twice in another letter case (the parser's
    /// <c>AllowDuplicateProperties = false</c> refuses only exact repeats), as the API's bodies are refused: a reader
    /// that matches names in any case (a log, a proxy) would see another value than the one applied. A name that is not
    /// valid UTF-16 cannot be compared, and is passed over.
    /// </summary>
    public static bool NamesAPropertyTwiceInAnyCase(JsonElement element)
    {
        if (element.ValueKind == JsonValueKind.Array)
        {
            return element.EnumerateArray().Any(NamesAPropertyTwiceInAnyCase);
        }

        if (element.ValueKind != JsonValueKind.Object)
        {
            return false;
        }

        var names = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var property in element.EnumerateObject())
        {
            string name;
            try
            {
                name = property.Name;
            }
            catch (InvalidOperationException)
            {
                continue;
            }

            if (!names.Add(name) || NamesAPropertyTwiceInAnyCase(property.Value))
            {
                return true;
            }
        }

        return false;
    }

    private static bool TryGetProperty(JsonElement element, string property, out JsonElement value)
    {
        value = default;
        try
        {
            return element.ValueKind == JsonValueKind.Object && element.TryGetProperty(property, out value);
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    /// <summary>The token the reader is on as a string, or null when it is of another type or not valid UTF-16.</summary>
    public static string? String(ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.String)
        {
            return null;
        }

        try
        {
            return reader.GetString();
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }
}
