using System.Collections.Frozen;
using System.Text.Json;

namespace HandoffDapr.Core.Serialization;

/// <summary>
/// An enum value's snake_case name, as <see cref="SnakeCaseEnumConverter{TEnum}"/> writes it: for metric tags (the
/// webhook counter's), worked out once per type instead of on every request.
/// </summary>
public static class SnakeCaseNames<TEnum>
    where TEnum : struct, Enum
{
    private static readonly FrozenDictionary<TEnum, string> Names =
        Enum.GetValues<TEnum>().Distinct().ToFrozenDictionary(value => value, value => JsonNamingPolicy.SnakeCaseLower.ConvertName(value.ToString()));

    /// <summary>The name of a declared value; an undeclared one (a cast integer) gets its number.</summary>
    public static string Of(TEnum value) => Names.TryGetValue(value, out var name) ? name : value.ToString();
}
