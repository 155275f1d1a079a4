using System.Security.Cryptography;
using System.Text;
using HandoffDapr.Core.Providers;

namespace HandoffDapr.Service.Tests.Security;

public sealed class WebhookSignatureTests
{
    private const string Secret = "0123456789abcdef0123456789abcdef";
    private static readonly byte[] Body = Encoding.UTF8.GetBytes("""{"event":"statusChange","id":"bc-1","status":"FINISHED"}""");

    // Computed here with the BCL directly, not with the code under test.
    private static string Expected => Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(Secret), Body));

    [Fact]
    public void Signature_with_and_without_prefix_is_valid()
    {
        Assert.True(WebhookSignature.IsValid(Secret, Body, "sha256=" + Expected));
        Assert.True(WebhookSignature.IsValid(Secret, Body, Expected));
        Assert.True(WebhookSignature.IsValid(Secret, Body, Expected.ToUpperInvariant()));
        // The prefix is read in any case, as the hex is.
        Assert.True(WebhookSignature.IsValid(Secret, Body, "SHA256=" + Expected));
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("sha256=")]
    [InlineData("sha256=zz")]
    [InlineData("sha1=0123")]
    public void Missing_or_malformed_signature_is_invalid(string? header) =>
        Assert.False(WebhookSignature.IsValid(Secret, Body, header));

    [Fact]
    public void Signature_wrong_in_its_first_or_last_hex_digit_only_is_invalid()
    {
        // Every byte of the HMAC is compared: one right but for its last byte is as forged as any other.
        static string Flipped(char c) => c == '0' ? "1" : "0";

        Assert.False(WebhookSignature.IsValid(Secret, Body, "sha256=" + Expected[..^1] + Flipped(Expected[^1])));
        Assert.False(WebhookSignature.IsValid(Secret, Body, "sha256=" + Flipped(Expected[0]) + Expected[1..]));
        Assert.False(WebhookSignature.IsValid(Secret, Body, "sha256=" + Expected[..32] + Flipped(Expected[32]) + Expected[33..]));
    }

    [Fact]
    public void Signature_of_63_or_65_hex_digits_is_invalid_even_when_it_starts_with_the_right_one()
    {
        Assert.True(WebhookSignature.IsValid(Secret, Body, "sha256=" + Expected));
        Assert.False(WebhookSignature.IsValid(Secret, Body, "sha256=" + Expected[..63]));
        Assert.False(WebhookSignature.IsValid(Secret, Body, "sha256=" + Expected + "0"));
        Assert.False(WebhookSignature.IsValid(Secret, Body, "sha256=" + Expected + "00"));
        Assert.False(WebhookSignature.IsValid(Secret, Body, "sha256=" + Expected[..62]));
    }

    [Theory]
    [InlineData("sha256= ")]
    [InlineData("sha256:")]
    [InlineData("sha256")]
    [InlineData("sha512=")]
    public void Signature_with_another_or_a_spaced_prefix_is_invalid(string prefix) =>
        Assert.False(WebhookSignature.IsValid(Secret, Body, prefix + Expected));

    [Fact]
    public void Signature_of_a_body_changed_by_one_byte_is_invalid()
    {
        var changed = (byte[])Body.Clone();
        changed[^2] ^= 1;

        Assert.False(WebhookSignature.IsValid(Secret, changed, Expected));
    }

    [Fact]
    public void Signature_made_with_another_secret_is_invalid() =>
        Assert.False(WebhookSignature.IsValid(Secret + "x", Body, Expected));

    [Fact]
    public void An_empty_secret_verifies_nothing_not_even_a_signature_made_with_it()
    {
        // HMAC takes an empty key: without the check, anyone could sign for an integration whose secret came out empty.
        var madeWithNoSecret = "sha256=" + Convert.ToHexStringLower(HMACSHA256.HashData(Array.Empty<byte>(), Body));

        Assert.False(WebhookSignature.IsValid(string.Empty, Body, madeWithNoSecret));
    }

    [Fact]
    public void A_secret_beyond_ascii_is_keyed_by_its_utf8_bytes()
    {
        // The secret is the integration's text, sent to Cursor in the launch's JSON; Cursor keys its HMAC with that
        // text's UTF-8 bytes. Keyed another way, every report of such an integration would be refused as forged.
        const string secret = "clé-секрет-密钥-0123456789abcdef0123456789";
        var signature = Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), Body));

        Assert.True(WebhookSignature.IsValid(secret, Body, "sha256=" + signature));
    }

    [Theory]
    [InlineData('g')]
    [InlineData('z')]
    [InlineData(' ')]
    // Beyond ASCII: an accented letter, an Arabic-Indic zero, a full-width A.
    [InlineData('é')]
    [InlineData('\u0660')]
    [InlineData('\uFF21')]
    public void Signature_of_sixty_four_characters_one_of_them_not_a_hex_digit_is_invalid(char notHex)
    {
        // The length a signature has, but not hex: however it decodes, it is no signature.
        Assert.False(WebhookSignature.IsValid(Secret, Body, "sha256=" + Expected[..31] + notHex + Expected[32..]));
        Assert.False(WebhookSignature.IsValid(Secret, Body, "sha256=" + new string(notHex == ' ' ? 'x' : notHex, 64)));
    }

    [Fact]
    public void Signature_with_surrounding_whitespace_is_valid() =>
        Assert.True(WebhookSignature.IsValid(Secret, Body, " sha256=" + Expected + "\t"));

    [Fact]
    public void Comparison_is_constant_time()
    {
        // Timing cannot be asserted reliably in a unit test; the source must use the BCL's constant-time comparison.
        var source = File.ReadAllText(Path.Combine(RepositoryRoot(), "src", "HandoffDapr.Core", "Providers", "WebhookSignature.cs"));

        Assert.Contains("CryptographicOperations.FixedTimeEquals", source);
        Assert.DoesNotContain("SequenceEqual", source);
    }

    internal static string RepositoryRoot()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "HandoffDapr.sln")))
        {
            directory = directory.Parent;
        }

        return directory?.FullName ?? throw new InvalidOperationException("HandoffDapr.sln not found above the test output.");
    }
}
