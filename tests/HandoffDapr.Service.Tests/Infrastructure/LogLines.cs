using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Service.Tests.Infrastructure;

public static class LogLines
{
    /// <summary>
    /// The whole record, as the JSON console formatter writes it: message, exception, every field, every scope with its
    /// fields. A secret searched for in the message alone passes when it is logged as a field, in a scope or in an
    /// exception's text.
    /// </summary>
    public static string Whole(FakeLogRecord record) => string.Join(' ', [
        record.Message, record.Exception?.ToString(),
        .. record.StructuredState?.Select(field => field.Key + "=" + field.Value) ?? [],
        .. record.Scopes.Select(Scope)]);

    /// <summary>Whether <paramref name="text"/> is anywhere in the whole record (<see cref="Whole"/>).</summary>
    public static bool Carry(FakeLogRecord record, string text) =>
        Whole(record).Contains(text, StringComparison.Ordinal);

    // A dictionary's ToString names its type, not what it holds; the JSON console writes its pairs.
    private static string? Scope(object? scope) => scope is IEnumerable<KeyValuePair<string, object?>> fields
        ? scope + " " + string.Join(' ', fields.Select(field => field.Key + "=" + field.Value))
        : scope?.ToString();
}
