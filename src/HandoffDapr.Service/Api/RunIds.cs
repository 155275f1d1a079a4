using System.Globalization;

namespace HandoffDapr.Service.Api;

internal static class RunIds
{
    /// <summary>Route ids are parsed here rather than by a route constraint, so a bad id is a 400 problem, not a bare 404.</summary>
    public static bool TryParse(string? value, out long id) =>
        TryParseDigits(value, out id) && Core.Model.WholeIds.IsValid(id);

    /// <summary>
    /// A number written in ASCII digits and nothing else. <see cref="NumberStyles.None"/> alone is not enough: .NET's
    /// parser takes trailing NUL characters for the end of the text, so "5\0" (a query's <c>5%00</c>) would read as 5.
    /// </summary>
    public static bool TryParseDigits(string? value, out long number)
    {
        number = 0;
        return !string.IsNullOrEmpty(value)
            && !value.AsSpan().ContainsAnyExceptInRange('0', '9')
            && long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out number);
    }
}
