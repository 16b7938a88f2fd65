/*
 * test_md5.c - md5 client auth's check (proxy/auth.c, its own MD5) against
 * OpenSSL's MD5: every length of user and password across the 64-byte
 * block and padding boundaries, plaintext and "md5..." secrets, and wrong
 * responses refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/evp.h>

#include "proxy/proxy_int.h"

/* Reference: hex MD5 of a then b, by OpenSSL. */
static void ref_md5_hex(const char *a, size_t la, const char *b, size_t lb, char out[33])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    assert_non_null(c);
    assert_int_equal(EVP_DigestInit_ex(c, EVP_md5(), NULL), 1);
    assert_int_equal(EVP_DigestUpdate(c, a, la), 1);
    assert_int_equal(EVP_DigestUpdate(c, b, lb), 1);
    assert_int_equal(EVP_DigestFinal_ex(c, d, &dl), 1);
    EVP_MD_CTX_free(c);
    assert_int_equal(dl, 16);
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* What a client sends: "md5" + md5(md5(password + user) + salt). */
static void client_response(const char *user, const char *password, const uint8_t salt[4],
                            char out[36])
{
    char inner[33 + 4];
    ref_md5_hex(password, strlen(password), user, strlen(user), inner);
    memcpy(out, "md5", 3);
    ref_md5_hex(inner, 32, (const char *)salt, 4, out + 3);
}

static void test_md5_against_openssl(void **state)
{
    (void)state;
    char user[160], password[160];
    for (size_t lu = 1; lu < sizeof(user); lu += 3) {
        for (size_t lp = 1; lp < sizeof(password); lp += 5) {
            for (size_t i = 0; i < lu; i++)
                user[i] = (char)('a' + (i * 7 + lp) % 26);
            user[lu] = '\0';
            for (size_t i = 0; i < lp; i++)
                password[i] = (char)(' ' + 1 + (i * 13 + lu) % 94);
            password[lp] = '\0';
            uint8_t salt[4] = { (uint8_t)lu, (uint8_t)lp, 0x00, 0xff };
            char resp[36], secret[36];
            client_response(user, password, salt, resp);
            /* A plaintext secret and the md5 one pg_authid would hold. */
            assert_true(pgw_auth_md5_check(user, password, salt, resp));
            memcpy(secret, "md5", 3);
            ref_md5_hex(password, lp, user, lu, secret + 3);
            assert_true(pgw_auth_md5_check(user, secret, salt, resp));
            /* Another salt, a flipped character: refused. */
            uint8_t salt2[4] = { salt[0], salt[1], 0x01, 0xff };
            assert_false(pgw_auth_md5_check(user, password, salt2, resp));
            resp[10] = resp[10] == '0' ? '1' : '0';
            assert_false(pgw_auth_md5_check(user, password, salt, resp));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_md5_against_openssl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
