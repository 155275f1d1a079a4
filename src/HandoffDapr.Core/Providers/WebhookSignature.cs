using System.Security.Cryptography;
using System.Text;

namespace HandoffDapr.Core.Providers;

/// <summary>HMAC-SHA256 of the raw body with the integration's secret, hex, with or without a <c>sha256=</c> prefix.</summary>
public static class WebhookSignature
{
    private const string Prefix = "sha256=";

    public static bool IsValid(string secret, ReadOnlySpan<byte> body, string? header)
    {
        if (string.IsNullOrEmpty(secret) || string.IsNullOrWhiteSpace(header))
        {
            return false;
        }

        var hex = header.Trim();
        if (hex.StartsWith(Prefix, StringComparison.OrdinalIgnoreCase))
        {
            hex = hex[Prefix.Length..];
        }

        if (hex.Length != 64)
        {
            return false;
        }

        // The span form reports characters that are not hex digits in its status; it does not throw.
        Span<byte> given = stackalloc byte[32];
        if (Convert.FromHexString(hex, given, out _, out var written) != System.Buffers.OperationStatus.Done || written != 32)
        {
            return false;
        }

        Span<byte> expected = stackalloc byte[32];
        HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), body, expected);
        // Constant time: the comparison must not tell an attacker how many leading bytes were right.
        return CryptographicOperations.FixedTimeEquals(expected, given);
    }

    public static string Sign(string secret, ReadOnlySpan<byte> body) =>
        Prefix + Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), body));
}
