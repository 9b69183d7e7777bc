from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE TABLE IF NOT EXISTS "accounts_password_reset_token" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "token_hash" VARCHAR(64) NOT NULL UNIQUE,
    "expires_at" TIMESTAMP NOT NULL,
    "used_at" TIMESTAMP,
    "created_at" TIMESTAMP NOT NULL,
    "user_id" INT NOT NULL REFERENCES "accounts_user" ("id") ON DELETE CASCADE
) /* A password-reset link that was mailed. Only the SHA-256 of its token is stored; it */;
        CREATE TABLE IF NOT EXISTS "paynow_transaction" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "reference" VARCHAR(60) NOT NULL UNIQUE,
    "kind" VARCHAR(16) NOT NULL /* WEB: web\nEXPRESS: express */,
    "method" VARCHAR(20) NOT NULL,
    "phone" VARCHAR(20) NOT NULL,
    "amount" VARCHAR(40) NOT NULL,
    "paynow_reference" VARCHAR(64) UNIQUE,
    "browser_url" VARCHAR(1000) NOT NULL,
    "poll_url" VARCHAR(1000) NOT NULL,
    "instructions" TEXT NOT NULL,
    "status" VARCHAR(32) NOT NULL,
    "error" TEXT NOT NULL,
    "paid_amount" VARCHAR(40),
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "invoice_id" INT NOT NULL REFERENCES "billing_invoice" ("id") ON DELETE RESTRICT,
    "payment_id" INT NOT NULL UNIQUE REFERENCES "billing_payment" ("id") ON DELETE RESTRICT
);
        CREATE TABLE IF NOT EXISTS "paynow_status_update" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "source" VARCHAR(16) NOT NULL /* RESULT_URL: result_url\nPOLL: poll */,
    "status" VARCHAR(32) NOT NULL,
    "amount" VARCHAR(40),
    "paynow_reference" VARCHAR(64) NOT NULL,
    "applied" INT NOT NULL,
    "received_at" TIMESTAMP NOT NULL,
    "transaction_id" INT NOT NULL REFERENCES "paynow_transaction" ("id") ON DELETE CASCADE
) /* Every authentic status message received, as received (replays included); each is */;
        CREATE TABLE IF NOT EXISTS "services_domain_registration" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "domain_name" VARCHAR(253) NOT NULL,
    "action" VARCHAR(16) NOT NULL,
    "years" INT NOT NULL,
    "status" VARCHAR(20) NOT NULL /* ACTIVE: active\nPENDING: pending\nPENDING_TRANSFER: pending_transfer\nEXPIRED: expired\nCANCELLED: cancelled */,
    "registration_date" DATE NOT NULL,
    "expiry_date" DATE NOT NULL,
    "whois_privacy" INT NOT NULL,
    "auto_renew" INT NOT NULL,
    "nameservers" JSON NOT NULL,
    "notes" TEXT NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "domain_product_id" INT REFERENCES "billing_domain_product" ("id") ON DELETE SET NULL,
    "invoice_id" INT REFERENCES "billing_invoice" ("id") ON DELETE SET NULL,
    "invoice_item_id" INT REFERENCES "billing_invoice_item" ("id") ON DELETE SET NULL,
    "user_id" INT NOT NULL REFERENCES "accounts_user" ("id") ON DELETE RESTRICT
);
CREATE INDEX IF NOT EXISTS "idx_services_do_domain__b73c80" ON "services_domain_registration" ("domain_name");
        CREATE TABLE IF NOT EXISTS "services_subscription" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "unit" INT NOT NULL,
    "service_name" VARCHAR(255) NOT NULL,
    "hosting_type" VARCHAR(16) NOT NULL,
    "billing_cycle" VARCHAR(16) NOT NULL,
    "price" VARCHAR(40) NOT NULL,
    "status" VARCHAR(16) NOT NULL /* PENDING: pending\nPROVISIONING: provisioning\nACTIVE: active\nSUSPENDED: suspended\nCANCELLED: cancelled */,
    "start_date" DATE NOT NULL,
    "next_due_date" DATE NOT NULL,
    "domain" VARCHAR(253) NOT NULL,
    "region" VARCHAR(50) NOT NULL,
    "service_metadata" JSON NOT NULL,
    "provisioning_completed" INT NOT NULL,
    "notes" TEXT NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "hosting_product_id" INT REFERENCES "billing_hosting_product" ("id") ON DELETE SET NULL,
    "invoice_id" INT REFERENCES "billing_invoice" ("id") ON DELETE SET NULL,
    "invoice_item_id" INT REFERENCES "billing_invoice_item" ("id") ON DELETE SET NULL,
    "user_id" INT NOT NULL REFERENCES "accounts_user" ("id") ON DELETE RESTRICT,
    CONSTRAINT "uid_services_su_invoice_acc07d" UNIQUE ("invoice_item_id", "unit")
) /* One hosting account: an invoice line of quantity N makes N subscriptions. */;
        ALTER TABLE "accounts_client_profile" ADD "referral_code" VARCHAR(64) NOT NULL DEFAULT '';
        ALTER TABLE "accounts_client_profile" ADD "address" VARCHAR(255) NOT NULL DEFAULT '';
        ALTER TABLE "accounts_client_profile" ADD "company_website" VARCHAR(200) NOT NULL DEFAULT '';
        ALTER TABLE "accounts_client_profile" ADD "city" VARCHAR(100) NOT NULL DEFAULT '';
        ALTER TABLE "accounts_client_profile" ADD "country" VARCHAR(100) NOT NULL DEFAULT '';
        ALTER TABLE "accounts_refresh_token" ADD "parent_jti" VARCHAR(64);
        ALTER TABLE "accounts_user" ADD "password_changed_at" TIMESTAMP;
        ALTER TABLE "billing_hosting_product" ADD "is_featured" INT NOT NULL DEFAULT 0;
        ALTER TABLE "billing_hosting_product" ADD "ssl_certificate" INT NOT NULL DEFAULT 0;
        ALTER TABLE "billing_hosting_product" ADD "slug" VARCHAR(200);
        ALTER TABLE "billing_hosting_product" ADD "addon_domains" INT NOT NULL DEFAULT 0;
        ALTER TABLE "billing_hosting_product" ADD "ftp_accounts" INT NOT NULL DEFAULT 0;
        ALTER TABLE "billing_hosting_product" ADD "cron_jobs" INT NOT NULL DEFAULT 0;
        ALTER TABLE "billing_hosting_product" ADD "cpu_type" VARCHAR(100) NOT NULL DEFAULT '';
        ALTER TABLE "billing_hosting_product" ADD "disk_space" INT NOT NULL DEFAULT 0;
        ALTER TABLE "billing_hosting_product" ADD "bandwidth" INT NOT NULL DEFAULT 0;
        ALTER TABLE "billing_hosting_product" ADD "storage_type" VARCHAR(8) NOT NULL DEFAULT '';
        ALTER TABLE "billing_hosting_product" ADD "email_accounts" INT NOT NULL DEFAULT 0;
        ALTER TABLE "billing_hosting_product" ADD "cpu_cores" INT;
        ALTER TABLE "billing_hosting_product" ADD "parked_domains" INT NOT NULL DEFAULT 0;
        ALTER TABLE "billing_hosting_product" ADD "subdomains" INT NOT NULL DEFAULT 0;
        ALTER TABLE "billing_hosting_product" ADD "dedicated_ip" INT NOT NULL DEFAULT 0;
        ALTER TABLE "billing_hosting_product" ADD "databases" INT NOT NULL DEFAULT 0;
        ALTER TABLE "billing_hosting_product" ADD "ram_gb" INT;
        ALTER TABLE "billing_hosting_product" ADD "backups_included" INT NOT NULL DEFAULT 0;
        ALTER TABLE "billing_hosting_product" ADD "cpanel_access" INT NOT NULL DEFAULT 0;
        ALTER TABLE "billing_hosting_product" ADD "ssh_access" INT NOT NULL DEFAULT 0;
        ALTER TABLE "billing_invoice" ADD "notes" TEXT NOT NULL DEFAULT '';
        ALTER TABLE "billing_invoice" ADD "terms" TEXT NOT NULL DEFAULT '';
        ALTER TABLE "billing_invoice_item" ADD "service_id" INT REFERENCES "billing_service" ("id") ON DELETE SET NULL;
        ALTER TABLE "billing_invoice_item" ADD "setup_fee" VARCHAR(40) NOT NULL DEFAULT '0.00';
        ALTER TABLE "billing_invoice_item" ADD "domain_product_id" INT REFERENCES "billing_domain_product" ("id") ON DELETE SET NULL;
        ALTER TABLE "billing_invoice_item" ADD "hosting_product_id" INT REFERENCES "billing_hosting_product" ("id") ON DELETE SET NULL;
        CREATE INDEX "idx_accounts_re_parent__579fb6" ON "accounts_refresh_token" ("parent_jti");
        CREATE UNIQUE INDEX "uid_billing_hos_slug_b92d12" ON "billing_hosting_product" ("slug");"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        DROP INDEX IF EXISTS "uid_billing_hos_slug_b92d12";
        DROP INDEX IF EXISTS "idx_accounts_re_parent__579fb6";
        ALTER TABLE "accounts_client_profile" DROP COLUMN "referral_code";
        ALTER TABLE "accounts_client_profile" DROP COLUMN "address";
        ALTER TABLE "accounts_client_profile" DROP COLUMN "company_website";
        ALTER TABLE "accounts_client_profile" DROP COLUMN "city";
        ALTER TABLE "accounts_client_profile" DROP COLUMN "country";
        ALTER TABLE "accounts_refresh_token" DROP COLUMN "parent_jti";
        ALTER TABLE "accounts_user" DROP COLUMN "password_changed_at";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "is_featured";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "ssl_certificate";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "slug";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "addon_domains";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "ftp_accounts";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "cron_jobs";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "cpu_type";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "disk_space";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "bandwidth";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "storage_type";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "email_accounts";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "cpu_cores";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "parked_domains";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "subdomains";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "dedicated_ip";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "databases";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "ram_gb";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "backups_included";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "cpanel_access";
        ALTER TABLE "billing_hosting_product" DROP COLUMN "ssh_access";
        ALTER TABLE "billing_invoice" DROP COLUMN "notes";
        ALTER TABLE "billing_invoice" DROP COLUMN "terms";
        ALTER TABLE "billing_invoice_item" DROP COLUMN "service_id";
        ALTER TABLE "billing_invoice_item" DROP COLUMN "setup_fee";
        ALTER TABLE "billing_invoice_item" DROP COLUMN "domain_product_id";
        ALTER TABLE "billing_invoice_item" DROP COLUMN "hosting_product_id";
        DROP TABLE IF EXISTS "paynow_transaction";
        DROP TABLE IF EXISTS "services_domain_registration";
        DROP TABLE IF EXISTS "accounts_password_reset_token";
        DROP TABLE IF EXISTS "paynow_status_update";
        DROP TABLE IF EXISTS "services_subscription";"""


MODELS_STATE = (
    "eJztXetzmzre/lcYf2pnfDq5OdvJeeedcRO39W5uEzvd7m52KAE51gYLyiWpZ9/+76/ExQ"
    "YkYYQxBqIvpyegR+BHQtLv/t/ewjKA6X44NyFA3q1jzaAJemfKf3tIW5D/YTfoKz3Ntte3"
    "yQVPewygPU3XLR95rqoHGNVOgB5dz9F0DzebaaYL8CUDuLoDbQ9aCF9FvmmSi5aOG0L0tL"
    "7kI/jTB6pnPQFvDhx841//xpchMsAv4MZ/2s/qDALTSP0EaJBnB9dVb2kH18bI+xw0JE97"
    "VHXL9Bdo3dheenMLrVpD5JGrTwABR/MA6d5zfPL65O2iHx7/ovBN103CV0xgDDDTfNNL/N"
    "xHdX2tp6rXN1N1Mpqqak+AIN1ChFz8qm7w65/IK/xxdHjyl5OPx6cnH3GT4DVXV/7yO3z0"
    "mpgQGNBzPe39Du5rnha2CDhek6pbC1tDS5rZ87nmsKlNQDL84hfP8huzmUdwfGHN8HpWre"
    "js7YrghfZLNQF68uaE1YODHDq/De/Ovw7v3uFW78kjLfwRhB/LdXTrKLxHOF9zbGOOgAjD"
    "K0Dn+D0pQu8Jn90TitxoNqqv4NGFnhDNDGjnCN/JhNYMwwGuK8J1AtI9jgeDIhwPBnyOyb"
    "3MvIae2Kocte8cu4eFZvBhzgw+pGdwcLRxBLe9FURyXIRjB8yA42gm5tAQWpcpYOf4Pj0p"
    "QPfpCZdtciszoR1AqFA1j2b6At/x4AJw5nUKmaHaiKAf4v/ZFfG7PELjH2jcIHPZC4/uOd"
    "RPx1ejyXR4dUset3Ddn2bA33A6IneOgqvLzNV3p5lhWnWi/H08/aqQP5V/3lyPAnot13ty"
    "gieu203/2SPvpPmepSLrVcV7ZW8lZcRXY9ZSo+67wFGF5KIEYrNwVGRwWy8dEXlz9pwQjs"
    "iFR01/ftUcQ6XuWEcWU5AixNLjcIPA1ML/CQZjjN9dQzprSYvE8/uok1YNwu94jsVX1893"
    "tNeVIJ+ceviX498LvHAjGE7Ohxej3u8U8Wmeya3F0SJ7RUPaU/B7yZuR94h4vNVc99VyjD"
    "vgAm9qPQPUYyhDGK36hTQidgRUHYJUvRV0k16kN1Ri7B8BVjEhela8ueYpr5qrLDRoAuOD"
    "QlYrfBUok6/DP44Gp4o1U6DnKsGTFOgqrmc5wPgTX+xlxmgHj3hAuLdnV7Hw3O0rmAFoKj"
    "9+gF82xA/A+8aPH31FQ4aiKeED8UC7im8r4AU4S8Uiep7wJfAjyBPJRPjQ60tlUNOUQcHY"
    "q3PNnYsc19Koas5q+6V5x2e19ZcjelZLIzt4VmvJ2SzmZNPhrMx5PAGrYICj70aOb/XjK0"
    "Uu/goqRa4dilz7HtxdCF2bBKnP+DAKn9DfwHLHolQzFsiKhakNUmx1gtcdmOFPbc4VuVL3"
    "+4WELSeEiEhZWOBWHOtVsbHgEcFXco3rE+lnuJZzfJc8MhBuzuLWeISwoERkHhiIMwYlZV"
    "X/iAdEZKgA7QaSmOvrOnBdy1EgCuQmF3OJf/ICYsnt3Y8ftuYQu/x/PPjjB3kKaRI90lP0"
    "oK1jLd7/+YBsIpdhsQ0/UguepVjkrV9wYyOChH+FnbzOLXP9IBjKjVgcxEfiEGib2hIY7/"
    "sPCPzSgY0bQG8ev+TccjzcBj9GecLDhLvDnxJmSpt5mCvywxzL08hQKe/wNNd9h/yMmBbg"
    "vt9WNMSEiIgvUXMpt3DkFr64GM4QEa7XiF2p9NvPd8JvYPWBi3CcRpXiebPQ0CWapTi+6T"
    "TS9HO7FMfl+Pai80yJIU4j5Sg3eZSl0oW/T0qli1S6SKXL21O6BKwzlC3xaBRQssTjLz37"
    "W/VF93Okc0As/SKC4wrQOVXI0aCI0Ihb5TjoMqTzyAlE1F5OAetzb6yR8R24RM+g43pq8J"
    "cA3WlU51xJDweFXHcHOa67A8p119RKEJ0CSZ6L8BwcKAKOmDyPkL+gTl70MTfuoEbOw5hA"
    "QeZ755fj0fX0TAnRDwhLBZ8/nyn4t81mD2h4cTW+PlM0YwFR1t5SaIROiwxQVopJjM9pdn"
    "igq+KzEHxhDM8nyzKBhjhHlCQuMyqPGLirYYl32Hp1CJ9ubi5TcuSn8TTD8f3VpxHmPqAe"
    "N4LhsTk+w0jp/m1L98HGYVpP4WcvMupppNTcNVlztzr26nMNPZX6yDldyHFv2rgLxFQwJk"
    "jCq54RY/op6ubz3+6AGfgR8PVRbA//lq38PO1UNthu7SWzJWtZJ50u8qVrjrclTee4i9Yu"
    "LfnsQPRiQR1sSdA47KWrU8gBOl5a8C5ka8sFQNtOp9uwl47OKHz3BThuwMG2312iq46yZV"
    "gLfAtvhE+QtKqAtIugx7tEh139LF3/cdX5lqRNEl11iS4hY1TiG6YSQbGpjYNeC3zK2XRU"
    "HfmWBQ14wUmCla0rOmHwDXiP0DTxG6p63FLa7+oa/F3b7zRkoeXC8t2153tRTTwDKv1AM9"
    "pe2g80VNmqz0DIpTmNqoTmBllOPxYxenzk2zw+UiYP19M8n5M6arO9Y42u0dix1uWLGDuG"
    "59Pxt9GZEqIf0NXo7svo4kxZAOeJRHuc31zdXo6m5BJJREZ8Sagwk/2YPcI3VPHjLDGnKx"
    "pYyveqYbt8NQu9NHK8bSOHbxslRz2NlKPelFFnaL8Zag/fxqMltIqmMHIBpRfQ+r2BO0ho"
    "Y5yBG8ZtZb7A9DJQAae3jrWwuqX4zBKbWv5S1OI3UK7vLy/z/KwTSgkPLCqw8IxxNy3cUx"
    "tp5mnJjBTTj5bQ9QVziqPvi+dbMZ2fCuPmUvHXpt23n6P4wxvLC/6ehP1vszjpVl7MrTzm"
    "TcesPFliSaFZ2A7yXsj3Ocf1mfZ8th3L8HUvx/mZ4wKWwUmyC5Adz9IF8DSy7NCE/3Vyc5"
    "0/w5PYrA4C6p7yf4oJ3Z1FVvb+Z+YjPUga8+hD04PI/UAe+7+CWtkqPPAIVyn1Q0z9u6vh"
    "9+yonF/efMrqFUgHnzJD9NPXkMdM+c/dT5OQ+mJcDxu9q64JXZ2SljrLVs1fYShgB5eY6m"
    "0G+HcSz4BIDsioN4EOF5rJUc2kgNmVJUR+iHpoIe85PF+MzsdXw8t3h0f9o0xkRLISjjQe"
    "dFuNXMR4EIp6QkrkNULmP2BsD5GHXXycFOKWiZV6ZZrkOf4KyFZaimU2WNJM0xwf0YXoTY"
    "MkrRutIrGL3ZYa/IJRA01bfwtr79f7zmazSOYTr4Ddr2GPt+sO2zWHi9LMXhxTjN/hQ8fd"
    "+Hzay9n3KmA8dCzvPOHMPb8A39EyWwHRk3VP3aQ4vSNxuN1PhqX0JGdYbqivYLP5hv4SpQ"
    "2nVWeFfo4NxzMZrOaU0DFZvJbUNDXIffj0uIiT9jHfSfuYLiq5jmAK1Ubq4ZLhrZKrc+J3"
    "IvVPG/RPDOqOquD/qCL+m7n37ZL+4yroP5b0l6R/UAX9A0l/SfoPDypZ/Q/kABQbAAReNb"
    "OUoYfCyr12A9u4a+TOgFOKbhos+d7A9+vcgi7h60XTl6VI5/SwH+Z7Bx8ODnot4V6m2pOp"
    "9pqyrnTYkCyj0Lo26rwotFIp2FYu5fUFTjTzxFwobqIKpqLgiQ6Tte8kRm3hbJf2i4xZlG"
    "HAoA2nmy0YDPOtNGF0xoQhGn7S5bCTgyIu+bgVP+zkgHbKN/0nEX7j9l1LMbMTcpNvRnE8"
    "Bb94nn1pWAeKGOSdYkffp6kDLBXHsDrEXt5cf4mbZ4Mb2C5//LiezUl+sn00eUXpTTBhJI"
    "ePi38aSevz7XZyprzY7gO6GF2Mz4dBgh8DGJCEiJG0P5c39yTlj2n5+K+70WR0eTm6I2Wh"
    "XWCaYcT8/t35oavOsJTvO4CxtW5SyCSRNapkVldaq5MxoPusurbG0jvyvZFToPqcvQ8afa"
    "5JBAJpyHiFhseo0cTlNIWRlGYpDSqFqXHxOAFeaaAkl1oE8IH8UXNZWRn4a0ASIynNUjrz"
    "7DKzNQuTxFKRB/5j6MYoQmsaJEnNkqoZBnF+FeaVwklqs9TamkMKfYtzSwMludRi4JqqDh"
    "wPzgJZR1BuYKCl7CAiO8QipgptQeqzUMm7iB3d1hAIzrTAZZk38oinsJJ5AeZdd16O9jRQ"
    "ci7kNYKp+o/1KDzTkzjJuADjxADo264KkW76hrA6jgWX/Aut7z6m0xESx1MYGVpNk+poC/"
    "XpUYDRNUDSyZ6jfIMLf47Wb2Cpq1h3IZviYY5N8ZBhsPVwwycgzHQW1zm2Pxbg+iO/RAhV"
    "fsJC3tws54BNYaXTO0gOA+14/dPXHA84JflmoGUMTT7hLlhAVUPILxlHw8RL0vNJ34JvSb"
    "UY1Y8QIARLkk2DJd35dOOnbcE3Ay0J37R+e76tzoD4up3AyYgwGRHWOE2HjAjrWGyQjAh7"
    "i6MecyQjwmREWCPJ2l+F9rawtctYsLhcEyMILFHJaXP0F0w0llFfte1JO476ihcy5C8eWV"
    "UA+WpuGtm5dHYnRawKJ3yjAkOYbF81bBeEX41IkMzF3fDz9EwxHG3mPaDJ6Br/Qfp5QLfD"
    "8cWZYmvQeEA330Z3F/ejM8V6AY7hgwd0Prw+J/ExJGCGMGCaoCE1sqHr4mXLYPq5kWMzTz"
    "ZNovKOzC08LucpAPCRN+uvVoI+Q5IX+7FCQ5i9FGhL+pp5kCrIHj5/epYXqtlEFHgJmDQr"
    "blJL4+XXYU/QXH10AvY2daQDQZK1BYlPKUHzGvg2iRaazgZ0gzigcnQz0JLzzbO7xBotF+"
    "jiZtpYjJ9ZNMn8epBZnKwFmVL5VlEL0taWCywckZKbc0sojzyNbHLuhJJS+FGxfCE56UKy"
    "3wKyPJZ/Lz9PyArQAV++ujOEeMBhqcj5ZK8AkmxhsqVNl7+otNO6J226b3HUeTbd/RYJbZ"
    "gWqPJoccdaWEGVACFWszBJLU2t7wJHjNUEQha03VytktBFsytcdO4+6qZl5PIM6/1MybnE"
    "pCpQy6/eCqCNStlYlFBe+U/8fOX6/vKyx15gK2D1NtlXuxbXouRmNxYOw0Xcumr3U2rLCs"
    "FSxGxJ1G3YS4dJIufUoN6Mplfg03UbdDhd99dV5qIKoDJBunQhrJ6tGlwIg6Wf70YY7wyF"
    "XQkD79kAIf0J65o/u/YnzE3EzTdk7C0Rd31WjMGgiBljMODbMci9bGxaWEKbZPN6spylCO"
    "UsbAd5HxSxHg341qMB15KqL0ljAcYpYAfprt7z8qevIQ96jLnNXayTEKk8YqnjEPRKxQ+n"
    "gdLpAiSntXRpqTsyO9zBFsDTyIGEJprv1sLCSteWfHt0CdcWGTxfk79iqFqIKnOJWVqYWG"
    "nEonfNTP0zMZbZYEkzTfNKOyAkn6dA8tDHyp8bbXlCvKZBcrpuNMQmwmS3tHAlonNbNnOL"
    "GrjSH23KvHU+nJwPL0a9vAW4Ao7pMpjtmsxFmWbvPgVMtunDQQWMhyaLzhPOPFQV4Dtaby"
    "sgerLuqZsUp7emLYzj0i4n7XKttMvFngYMm1zCCWGzPc5ONJamuDYdRPs5prhSoYv7jlhs"
    "kfpRPFxLhmkJhWm1MFmKbi1scgiJx75wxpTb0fXF+PrLmWIDZGDSH9D5zdXt5SgoJ7zq9Q"
    "F9Ho6D9CgzDTYmN4oDZsABiHVq5X8LKVAHIr1qKEgQJPQQj/FJwCoI8GnmuauF8TzBJRm8"
    "1+kwriLBe1LdvaOaQ0C3HAN/FI9LMW5poFR7S7V3PWpvdiBSYkZWQHDBGK+Gzd+i5NJfr7"
    "BmUEhlkxcYwVeI3SAwtfB/dhMd0ZKh+y2q7lqFfLEUXsl4sAIqr1RzqfRq0zbUz1F6Bf9S"
    "tPLF0Lh9JxUyxTQyeSoZSgbV8Sclwm/cvnO5gav3K88NneCny9lb6ERnkuas0vUFpDEn92"
    "Z1I9VJk1eU3u3o7nx0PR1+GRGNo6MD5OE99wF9Hn8PtIvwV1OUiyteXzTTF3UjpcHSqrHB"
    "qoGnt+Pl5BrmK6HSSKlqbLKqEaC8fNL8MU7i5Ag3eYRlObWay6n5Lin6bMIFZKjvc9IcpV"
    "BS08gjVmc7M2wgVud4M+xQRX7QEloXEMGFv1CJtswpl+ea14UM2Nl4zIodQ8OuKNr5gWsU"
    "sBlRa+R5nYlak4ZY/irULUMsZdEq4i9Mkp5VUB6xfTt7IZfgyLpVTbaxDnG0S0fg2NefYR"
    "dJhAFstookog822kR6Q4RHDqMU1zINxZtrngJdBQFIDCFKFHGiIMtRNCV0sVfeTSaXfQX8"
    "gf/A1OH+4BNSXi3n+f2HrLZpB91LW4201TRmnajDVlMiK5DMBiStNu2w2pRJXyMz1xSVT9"
    "uY5KpnIby7R3JVDT7eOygyKnW2tepspaDPn+tS0I+ym2+fOptI+wXzZrdFmmV6sNedZLwt"
    "ZO1S9Mc7sXcFXGLt6DHE/+Ttfp4KQMcN1UWipfSJrG2p3bGc7QJE7DPbeDdlumiyZNi7n4"
    "zuzhRS6uMBDb8EtefxnCbF5yf/mExHV2eKu3SjBWb/Z76IWVFdSAbW5AEpe7wuJKsf5gjr"
    "h7S07mGBXERMj9t3gt+6JXQsliDLY0rpm8SZNa5GcWZ1RcozUp5puDyT9slHL8BxNfHSdQ"
    "ykjCXdHOyYpI1mW7xAWKa7lpFdNDKPMdnYKf8qiswTFaSSo8CSpDKjtEGUys4RKU+16uvv"
    "58pTrstbau/vxxe8E3sSlWHZ96HxgWDLfP9NqBTIYjI4Px6HG2Nyywt+Z/rg8gJd6FniYl"
    "AWV6Ox4Vv46JpsDbvIJ2MAW3O8OPNbUcrTqF0Rvr/AvuOjAkwfH3GJJrdan8dqbU4S0bwM"
    "z6fjb6MzJUQ/ICwTToL8VablNiWeLDhJO8A2l6rLnPm5oikDLQVUKaBKATVXQDU114ss1C"
    "VGnkbL0W/T6Ierf5lPPgmU0YZNjjZMFFYvHJ+1Qsigt40aJz/K2bSlpqnbqZ8SU2qLbPCR"
    "DXxbl4+03b1lu9FePBnCTFeTQNy5t4Moc3Zi82yrfp4yLsrKFUpRqr9GbIxvGL0AZ6ngZW"
    "+OT/pQV8IulGh+KA7QAT6SGH1Fc1d/KO+IcKAtXQUi3fQNYLz/UwGaPlegm5V/Kn/AA8I0"
    "mBA30jxlgVd4xcKrgeJZCn6CEiV5l5EQTdQoWr7DS59cQEOwQjfZTE1yG95fTtX7u8szPJ"
    "1djFF9x3xAtzeX+IptmWYzNAR56hqOancPKpoW68P2XZigmcebylz3ox2vVFZ2FrYDsSnp"
    "GX16UmBGn55wZzS5lZnR4b4rqkxco6QSUUCJGJ+FSqgUMlCpSGqKlqGIIimRWVdM10ADpZ"
    "fLZp1DbiJjYdVDmTzGTSO8qCKCnm9NcnShR4IrZmeGa6OUnZky0uelVWtBP0dCbUqNnwZl"
    "AD4t4pJxyvfIOKVO7s/4Z5VVAsTYJkugvb+PPp0pr+DxAY2+396NJpMzBfyy8QmBUo7tR/"
    "RvR0m3msSk6gu62ZggMXE0BkhyN5K7b61KQw9r3VKrZFVXTdoOK9eqPDrWKzHp+Y4pQnYG"
    "1rml4/CgqDNorjcoPcEt0xTlOomRRBckGpJn+jqnZjY/GDGL6wDhdYcktsO2g8VV6EGNJL"
    "irZ6ZXb+MBjmMxPFb4k3sFkLNaPBVWUOG1zPkvg5SmtfwzoHRf5i8o3bU7hE5DZUY9jZSj"
    "3pRRZ/i08rMaybq8vSrrDkR+aGK8pkHV8Np6fX2O7U6W4624HG8Rz+Fwtd/ScZjt39oR6h"
    "n+w9TCQNMXF8stbmmO+2nVklB0vqbXwiLzdStz8UWQW/0OPEHyWjx7MaNVP89gHGWad9Uw"
    "dbvqZJHSdNymraifYzqORlg0tD8D616g+dHguIgNaHDMNwKRexkrEMdfh8/zGlGj5iX7ud"
    "egzK3cWLwEmsPY7Lnrxap9fWLBYaOXDJkhAd2Ori/G119IEV5kYMZXV9Tp3fB68plksoxu"
    "hc5VM5LVcvT9dnxHEiuAXzZ0gPGAzofX56PLyyDZAuHINMvlW6jeLJ380nNKjvIciBjgPD"
    "VKe8/KTB3lcDrK6tXJiC+FiczA3jSFr3MLuqrtwBdNZ9RGyXXZp7DScV/AcT/KnoLAqyDt"
    "aaDkXIBz8i8RtgDrrMIvM5mBySKT+Ua7EkUmkcXUFfEtpCuAtJAKW0il4Y5/AGynCUca7t"
    "7iqBcx3EWKo7hQspBOj4mV+WnoY8W+rKNvhVYPLEpyu0ZKgmmC609U1biVv0uZqppG7rap"
    "qtYGPP6OVgG7obXudt1fuxaFoiwzd3NOajDGKlwB0Z0rY56lOMd5IpfbYJ+qjuCSBeNaYe"
    "9n7OzC6e12GU8+8R+Tv5+uQJ+83y/kFOBmIRuTtd0gsKoJr+k6cWg+UzSkROQpJsQNrJny"
    "09eQB72lcq0stGfg4n+TD3PpOvSV9szwTfgX9UngRl7v39JnYY8+C8EQCJwRo+b1HRAPGk"
    "1sslZG8EmXqG+XxjU5rL20/8egkP/HIMf/Y5A1t0YrVUiUAN9ZXAd0zLv2/2hjifTaJnf1"
    "dNsO80ieH97ksKsIyuj2N1ujhOFxc3fzbTwZ31yHlx2LFBWyUHAv668zuZ+QDoifjeu7pI"
    "sqvW92ksvU8YS9RdKoN+0sgsAvzAQ+sotySAHfNI2hJkZkk1wjOncU2YnjL3GVE3P8XSM6"
    "x3Ch0tE5laPpwtGxPLIAnkakRppovi8NC9sMhxry2M441CR3bsz+wiYKMtGcvPxOpNeZiN"
    "eZdG6Szk0NOKW01M1FOje9xVEv4twU6+lKeTexwdJNRLo3SfembhAs3Zuke1MDXBbE3Jsy"
    "21IF9H4Ne+y8gxN7Q5ceTlVy3G4Pp7aR3FAfpyFwoD7vMbybojv9PL8mbd1GpjVp00Ggr/"
    "BdhEhopKDGPQHpoMl/J/4s5KMSYDhq3kF2D4vmos5LRU3lM7WQx0y5xTdmJCD12zD2Y8+s"
    "zFpByRV1bma//x9OVGVH"
)
