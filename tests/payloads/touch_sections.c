/*
 * touch-sections: a program with a known number of pages touched in .bss and in .data, by one function.
 *
 * lab explain must show exactly BSS_PAGES faults in .bss and DATA_PAGES in .data from touch_pages (the
 * e2e test asserts it on every arch). Each array is page-aligned and a whole number of pages, so no other
 * variable shares its pages; every page is written once (a write fault maps one page: no fault-around).
 */
#define BSS_PAGES 5
#define DATA_PAGES 3
#define PAGE 4096

static unsigned char bss_pages[BSS_PAGES * PAGE] __attribute__((aligned(PAGE)));
static unsigned char data_pages[DATA_PAGES * PAGE] __attribute__((aligned(PAGE))) = {1};

__attribute__((noinline)) static void touch_pages(void)
{
	int i;
	for (i = 0; i < BSS_PAGES; i++)
		((volatile unsigned char *)bss_pages)[i * PAGE] = 2;
	for (i = 0; i < DATA_PAGES; i++)
		((volatile unsigned char *)data_pages)[i * PAGE] = 2;
}

int main(void)
{
	touch_pages();
	return bss_pages[PAGE] == 2 && data_pages[0] == 2 ? 0 : 1;
}
