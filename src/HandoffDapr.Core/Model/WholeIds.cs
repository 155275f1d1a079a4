namespace HandoffDapr.Core.Model;

/// <summary>
/// Run, group, organization, project and integration ids: positive whole numbers up to 2^53 − 1. daprd reads actor
/// state into float64 on its way to the store, so a larger id would come back rounded, or no longer fit a long.
/// </summary>
public static class WholeIds
{
    public const long Max = 9_007_199_254_740_991;

    public static bool IsValid(long? id) => id is > 0 and <= Max;

    /// <summary>
    /// An id written only as this service writes it (no sign, no leading zero, no space): where the text itself names
    /// something (an actor, a configuration key), "042" or "+42" beside "42" would be a second name for one id.
    /// </summary>
    public static bool TryParseCanonical(string? text, out long id) =>
        long.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out id)
        && IsValid(id) && text == id.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
